#!/usr/bin/env bash
# Install thinkscale into ./.venv on a fresh machine.  Usage: bash scripts/install.sh [--dev] [--train]
#
# llama-cpp-python compiles llama.cpp at install time. Its default build targets the build machine's CPU, which
# crashes on VMs that advertise instructions they forbid (AMX: a segfault in ggml_backend_amx_mul_mat on the first
# decode), so we build it once with portable flags, keep the wheel in the thinkscale cache keyed by version and
# flags, and install that wheel. Later installs (and CI runs on the same machine) reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_PYTHON_VERSION=0.3.36  # keep in step with pyproject.toml
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
PYTHON=${PYTHON:-python3}
DEV=0
TRAIN=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --train) TRAIN=1 ;;
    *) echo "install.sh: unknown option $arg (--dev: the test tools, training included; --train: training)" >&2
       exit 2 ;;
  esac
done

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "install.sh: thinkscale needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1
fi

# Debian packages the install needs: apt-get as root, else through sudo. can_apt: whether either is possible here.
can_apt() {
  command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; }
}
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  # a failed update skips the install but is not fatal; a failed install stops the script (set -e)
  if $sudo apt-get update -qq; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

# A C/C++ toolchain and cmake build llama.cpp; Debian packages only.
if ! command -v g++ >/dev/null || ! command -v cmake >/dev/null; then
  if can_apt; then
    apt_install build-essential cmake
  else
    echo "install.sh: g++ and cmake are needed to build llama.cpp: sudo apt-get install build-essential cmake" >&2
    exit 1
  fi
fi

# bubblewrap (bwrap) isolates model-written code: thinkscale.tools.sandbox, used by the sc-tir and pal strategies and
# `thinkscale sandbox`, refuses to run code without it. Debian package; sudo when not root.
if ! command -v bwrap >/dev/null; then
  if can_apt; then
    apt_install bubblewrap
  else
    echo "install.sh: bubblewrap is not installed and cannot be installed here (no apt-get, or not root and no" \
      "sudo): the code sandbox (sc-tir, pal, thinkscale sandbox) will refuse to run code until it is" \
      "(Debian/Ubuntu: apt-get install bubblewrap)" >&2
  fi
fi

# The test tools (--dev) include Debian's chromium: tests/eval/test_report.py renders the HTML report headless.
if [ "$DEV" = 1 ] && ! command -v chromium >/dev/null; then
  if can_apt; then
    apt_install chromium
  else
    echo "install.sh: chromium is not installed and cannot be installed here: the report rendering test will" \
      "fail until it is (Debian/Ubuntu: apt-get install chromium)" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip

CACHE=${THINKSCALE_HOME:-$HOME/.cache/thinkscale}
KEY=$(printf '%s %s' "$LLAMA_CPP_PYTHON_VERSION" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)
WHEELS="$CACHE/wheels/llama-cpp-python-$LLAMA_CPP_PYTHON_VERSION-$KEY"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl >/dev/null 2>&1; then
  echo "Building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION from source with portable CPU flags"
  echo "  ($LLAMA_CMAKE_ARGS; 4-8 minutes on 2 cores, once per machine)"
  rm -rf "$WHEELS.partial" && mkdir -p "$WHEELS.partial"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" .venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps \
    --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -w "$WHEELS.partial"
  rm -rf "$WHEELS" && mv "$WHEELS.partial" "$WHEELS"  # only a finished build is ever used
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
  "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl

# Training (thinkscale[train], in --dev too): PyTorch's CPU build first, so that the extra's torch>=2.9 takes it
# instead of a multi-GB CUDA build. A GPU machine installs its own torch and then `pip install -e ".[train-gpu]"`.
if [ "$DEV" = 1 ] || [ "$TRAIN" = 1 ]; then
  .venv/bin/python -c 'import torch' 2>/dev/null || \
    .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
fi
if [ "$DEV" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
elif [ "$TRAIN" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[train]"
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
echo "thinkscale installed in .venv ($(.venv/bin/python -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)'))"
