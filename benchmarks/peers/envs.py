"""The peers' own virtual environments: Keras 3 on JAX and Keras 3 on TensorFlow, each in a venv of its own.

They are never trainwell's dependencies: each is created on first use under ``~/.cache/trainwell-peers/``
(``$TRAINWELL_PEERS_CACHE`` overrides it) with the interpreter that runs this script, from pinned versions,
and reused while its pins are unchanged (a ``pins.txt`` in the venv records what was installed).

    python benchmarks/peers/envs.py            # create both (a few minutes the first time), print their paths
    python benchmarks/peers/envs.py --check    # only say which exist
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# The versions the benchmark was recorded with (README "Performance"). Keras 3 picks its backend from
# KERAS_BACKEND at import; each venv holds exactly one backend so the other can never be picked by accident.
PEERS: dict[str, list[str]] = {
    "keras-jax": ["keras==3.15.1", "jax==0.10.2", "jaxlib==0.10.2"],
    "keras-tf": ["keras==3.15.1", "tensorflow==2.21.0"],
}
BACKEND = {"keras-jax": "jax", "keras-tf": "tensorflow"}


def cache_dir() -> Path:
    return Path(os.environ.get("TRAINWELL_PEERS_CACHE", Path.home() / ".cache" / "trainwell-peers"))


def python_of(name: str) -> Path:
    return cache_dir() / name / "bin" / "python"


def is_ready(name: str) -> bool:
    pins = cache_dir() / name / "pins.txt"
    return python_of(name).exists() and pins.exists() and pins.read_text().split() == PEERS[name]


def ensure(name: str, quiet: bool = False) -> Path:
    """The venv's python for peer ``name``, created (or re-created for changed pins) when needed."""
    if name not in PEERS:
        raise SystemExit(f"unknown peer {name!r}; known: {', '.join(sorted(PEERS))}")
    if is_ready(name):
        return python_of(name)
    venv = cache_dir() / name
    print(f"creating {venv} ({' '.join(PEERS[name])}); a few minutes the first time", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python_of(name)), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("--quiet")
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "numpy", *PEERS[name]], check=True)
    (venv / "pins.txt").write_text("\n".join(PEERS[name]) + "\n")
    return python_of(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report which venvs are ready")
    parser.add_argument("peers", nargs="*", default=list(PEERS), help=f"default: {' '.join(PEERS)}")
    args = parser.parse_args()
    for name in args.peers:
        if args.check:
            print(f"{name}: {'ready' if is_ready(name) else 'missing'} ({cache_dir() / name})")
        else:
            print(f"{name}: {ensure(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
