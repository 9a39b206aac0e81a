"""The peers' virtual environments under ``.venvs/``, installed as ../shared/PEERS.md §1 says.

torch 2.13.0 goes in first, pinned by the repository's ``constraints.txt`` (the local CPU build;
an unpinned torch would pull the CUDA wheels), and every later install keeps that pin.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".venvs"
CONSTRAINTS = ROOT / "constraints.txt"


@dataclass(frozen=True)
class PeerEnv:
    """One peer's environment: what must be installed, and the pip commands that install it."""

    name: str
    versions: dict[str, str]  # distribution -> exact version (a local "+cpu" label is ignored)
    imports: tuple[str, ...]  # modules that must import
    installs: tuple[tuple[str, ...], ...]  # pip install arguments, one command each, in order

    @property
    def python(self) -> Path:
        return VENVS / self.name / "bin" / "python"


JOEYNMT = PeerEnv(
    name="joeynmt",
    versions={"torch": "2.13.0", "joeynmt": "2.3.0", "sentencepiece": "0.2.0"},
    imports=("joeynmt.training", "importlib_metadata", "sentencepiece"),
    installs=(
        ("torch==2.13.0",),
        # importlib-metadata: imported by joeynmt/helpers.py but not declared;
        # sentencepiece 0.2.3 lacks SetVocabulary, which tokenizers.py calls (PEERS.md §1).
        ("joeynmt==2.3.0", "importlib-metadata", "sentencepiece==0.2.0"),
    ),
)

ONMT = PeerEnv(
    name="onmt",
    versions={"torch": "2.13.0", "OpenNMT-py": "3.5.1"},
    imports=("onmt.bin.train", "onmt.transforms"),
    installs=(
        ("torch==2.13.0",),
        # It declares torch<2.3, which would pull torch 2.2.2 and the CUDA wheels: no deps, and
        # its runtime deps by hand (spacy and fasttext because onmt.transforms imports them all).
        ("--no-deps", "OpenNMT-py==3.5.1"),
        (
            "configargparse",
            "pyonmttok>=1.37,<2",
            "pyyaml",
            "sacrebleu",
            "tensorboard>=2.3",
            "six",
            "rapidfuzz",
            "pyahocorasick",
            "sentencepiece",
            "numpy",
            "spacy",
            "fasttext-wheel",
        ),
    ),
)

# Run by the environment's own interpreter: prints what is wrong, one item per list entry.
_CHECK = """
import importlib, importlib.metadata as md, json, sys
wanted, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
problems = []
for dist, version in wanted.items():
    try:
        found = md.version(dist).split("+")[0]
    except md.PackageNotFoundError:
        found = None
    if found != version:
        problems.append(f"{dist}: want {version}, found {found}")
for module in modules:
    try:
        importlib.import_module(module)
    except Exception as err:
        problems.append(f"import {module}: {type(err).__name__}: {err}")
print(json.dumps(problems))
"""


def problems(env: PeerEnv) -> list[str]:
    """What keeps ``env`` from being usable (an empty list when it works)."""
    if not env.python.exists():
        return [f"{env.python} does not exist"]
    args = [json.dumps(env.versions), json.dumps(list(env.imports))]
    done = subprocess.run(
        [str(env.python), "-c", _CHECK, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return [f"the check failed: {done.stderr.strip()[-500:]}"]
    return json.loads(done.stdout.splitlines()[-1])


def ensure(env: PeerEnv, log: Path) -> None:
    """Create and install ``env`` unless it already works; pip's output goes to ``log``.

    Raises:
        SystemExit: an install failed, or the environment still does not work after it.
    """
    found = problems(env)
    if not found:
        print(f"peers: {VENVS.name}/{env.name} is ready", file=sys.stderr)
        return
    print(f"peers: installing {VENVS.name}/{env.name} ({found[0]}); log: {log}", file=sys.stderr)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        if not env.python.exists():
            _run([sys.executable, "-m", "venv", str(VENVS / env.name)], out, log)
        for args in env.installs:
            pip = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check"]
            _run([*pip, "-c", str(CONSTRAINTS), *args], out, log)
    still = problems(env)
    if still:
        sys.exit(f"peers: {VENVS.name}/{env.name} does not work after installing: {still}")


def _run(command: list[str], out: TextIO, log: Path) -> None:
    out.write(f"$ {' '.join(command)}\n")
    out.flush()
    code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"peers: exit status {code} from {' '.join(command)}; see {log}")
