"""Run one command with a time limit and print its peak resident memory as one JSON line.

    python peak.py --log FILE [--stop-after SECONDS --signal INT] -- COMMAND [ARG ...]

The command's output goes to FILE. After ``--stop-after`` seconds from launch it gets
``--signal`` (JoeyNMT saves its weights on SIGINT, jumok on SIGTERM); if it is still running
``--grace`` seconds later it is killed. This wrapper is a process of its own so that
``RUSAGE_CHILDREN`` covers this one command: ``ru_maxrss`` is then the largest resident set of
the command or of any child it waited for (not their sum: OpenNMT-py's data-loader workers are
not added, as in ../shared/PEERS.md, which used ``/usr/bin/time -v``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path


def measure(
    command: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    stop_after: float | None = None,
    signal_name: str = "TERM",
) -> dict:
    """Run ``command`` under this script (a process of its own) and return its JSON result.
    Exits with peak.py's error when the wrapper itself fails."""
    wrapper = [sys.executable, str(Path(__file__).resolve()), "--log", str(log)]
    wrapper += ["--signal", signal_name]
    if stop_after is not None:
        wrapper += ["--stop-after", str(stop_after)]
    done = subprocess.run(
        [*wrapper, "--", *command],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"peers: peak.py failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True, help="file for the command's output")
    parser.add_argument("--stop-after", type=float, help="seconds from launch, then --signal")
    parser.add_argument("--signal", default="TERM", help="signal name without SIG (default TERM)")
    parser.add_argument("--grace", type=float, default=120.0, help="seconds before a SIGKILL")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    stop = signal.Signals[f"SIG{args.signal.upper()}"]
    start = time.monotonic()
    stopped = killed = False
    with args.log.open("ab") as out:
        # A session of its own, so that what the command leaves behind can be ended with it
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = child.wait(timeout=args.stop_after)
        except subprocess.TimeoutExpired:
            child.send_signal(stop)
            stopped = True
            try:
                code = child.wait(timeout=args.grace)
            except subprocess.TimeoutExpired:
                child.kill()
                killed = True
                code = child.wait()
        end_leftovers(child.pid)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    result = {
        "returncode": code,
        "wall_seconds": round(time.monotonic() - start, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "stopped_by": stop.name if stopped else None,
        "killed": killed,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result), flush=True)
    sys.exit(0)


def end_leftovers(group: int) -> None:
    """Kill what is left of the command's process group once the command has ended.

    OpenNMT-py's data-loader workers (multiprocessing spawn children) outlived its main process
    when it was stopped by SIGTERM: each kept ~0.9 GB and 1-2 % of a core until the machine was
    cleaned by hand (found 2026-11-26, during a later run of another system).
    """
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left


if __name__ == "__main__":
    main()
