"""``python -m jumok`` and the ``jumok`` program: the command line."""

import sys


def run() -> None:
    """Run ``jumok``; a Ctrl-C while its modules load ends it like one during a command."""
    try:
        from jumok.app.cli import main
    except KeyboardInterrupt:
        print("jumok: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())


if __name__ == "__main__":
    run()
