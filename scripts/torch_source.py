#!/usr/bin/env python3
"""Say where scripts/setup.sh should take torch from on this host (stdlib only).

    python3 scripts/torch_source.py [--smi FILE]

Prints one line, `KIND<TAB>INDEX<TAB>WHY`: KIND is `cpu` or `cuda`; INDEX is the pip index URL
to try first (empty: the default index); WHY is the sentence setup prints. On a host without an
NVIDIA GPU the CPU build is right (the default index would bring gigabytes of CUDA libraries).
On a GPU host the build must match the driver: the default index's torch 2.13.0 is built for
CUDA 13.0 (driver 580 or newer); an older driver gets the newest CUDA build it can run from
PyTorch's own index, and one too old for any is refused with the version it needs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

PYTORCH_INDEX = "https://download.pytorch.org/whl"
# CUDA builds PyTorch publishes for our torch release, newest first: (CUDA version, index suffix).
CUDA_BUILDS = [((13, 0), None), ((12, 8), "cu128"), ((12, 6), "cu126")]


def driver_cuda(smi_output: str) -> tuple[int, int] | None:
    """The highest CUDA version the driver supports, from `nvidia-smi`'s banner."""
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", smi_output)
    return (int(found.group(1)), int(found.group(2))) if found else None


def choose(smi_output: str | None) -> tuple[str, str, str]:
    """(kind, index URL or "", why) for a host whose `nvidia-smi` printed `smi_output`."""
    if smi_output is None or ("GPU" not in smi_output and "CUDA" not in smi_output):
        return (
            "cpu",
            f"{PYTORCH_INDEX}/cpu",
            "no NVIDIA GPU seen: the CPU build of torch",
        )
    cuda = driver_cuda(smi_output)
    if cuda is None:
        return ("cuda", "", "an NVIDIA GPU is seen but its CUDA version is not: the default build")
    for version, suffix in CUDA_BUILDS:
        if cuda >= version:
            built = f"{version[0]}.{version[1]}"
            if suffix is None:
                return (
                    "cuda",
                    "",
                    f"driver supports CUDA {cuda[0]}.{cuda[1]}: the CUDA {built} build",
                )
            return (
                "cuda",
                f"{PYTORCH_INDEX}/{suffix}",
                f"driver supports CUDA {cuda[0]}.{cuda[1]}: the CUDA {built} build ({suffix})",
            )
    oldest = ".".join(map(str, CUDA_BUILDS[-1][0]))
    raise SystemExit(
        f"setup: this NVIDIA driver supports CUDA {cuda[0]}.{cuda[1]}, and torch needs CUDA "
        f"{oldest} or newer: update the driver, or set CORTEX_TORCH_CPU=1 for the CPU build"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smi", help="read nvidia-smi's output from this file (tests)")
    args = parser.parse_args()
    if args.smi is not None:
        with open(args.smi) as file:
            smi: str | None = file.read()
    elif shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False)
        smi = done.stdout if done.returncode == 0 else None
    else:
        smi = None
    print("\t".join(choose(smi)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
