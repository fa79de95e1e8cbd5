#!/usr/bin/env bash
# normgen's two entry points on a fresh Debian 12 machine:
#   tools/dev.sh demo   set up, build, generate the kernels and compare them with PyTorch
#   tools/dev.sh test   set up, build, run the whole test suite (ctest: GoogleTest + pytest)
# Setup is idempotent: Debian packages and the project virtualenv are installed only
# when missing, so a second run goes straight to the (incremental) build.
# Other subcommands: setup, build, bench [args...], env (prints the variables to export).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${NORMGEN_BUILD_DIR:-$ROOT/build}
REQ=$ROOT/requirements.txt
REQ_HASH=$(sha256sum "$REQ" | cut -c1-12)
# Outside the work tree so fresh clones (CI) reuse it; keyed by the pinned list.
VENV=${NORMGEN_VENV:-$HOME/.cache/normgen/venv-$REQ_HASH}
PY_BOOT=${NORMGEN_BOOTSTRAP_PYTHON:-python3}

APT_PACKAGES=(g++ make libgtest-dev libgmock-dev libsqlite3-dev libjemalloc2 g++-aarch64-linux-gnu qemu-user
              libopenmpi-dev openmpi-bin ocl-icd-libopencl1 mesa-opencl-icd valgrind clang-14 libclang-rt-14-dev)

log() { printf '[normgen] %s\n' "$*" >&2; }

setup_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_venv() {
  local stamp=$VENV/.normgen-requirements-$REQ_HASH
  [ -f "$stamp" ] && return 0
  log "creating the project virtualenv at $VENV"
  "$PY_BOOT" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  touch "$stamp"
}

halide_root() {
  "$VENV/bin/python" -c 'import halide, os; print(os.path.dirname(halide.__file__))'
}

do_setup() { setup_apt; setup_venv; }

do_build() {
  do_setup
  export PATH=$VENV/bin:$PATH
  if [ ! -f "$BUILD/build.ninja" ]; then
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DHalide_ROOT="$(halide_root)" -DPython_EXECUTABLE="$VENV/bin/python" \
      -DNORMGEN_ONEDNN_ROOT="$VENV"
  fi
  cmake --build "$BUILD" -j "$(nproc)"
}

env_lines() {
  echo "export PATH=$VENV/bin:\$PATH"
  echo "export PYTHONPATH=$BUILD/python\${PYTHONPATH:+:\$PYTHONPATH}"
}

# Timing runs (demo, bench) use jemalloc with decay off: on this kind of VM the first
# touch of a fresh page costs ~8 us, so glibc's mmap-per-large-allocation turns every
# op that returns a new 32 MB tensor (torch's and normgen's alike) into ~60 ms of page
# faults. See bench/run_bench.py.
timing_env() {
  local lib=/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2
  if [ -f "$lib" ]; then
    echo "LD_PRELOAD=$lib${LD_PRELOAD:+ $LD_PRELOAD}"
    echo "MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) do_setup ;;
  build) do_build ;;
  env) env_lines ;;
  demo)
    do_build
    env $(timing_env) PATH="$VENV/bin:$PATH" PYTHONPATH="$BUILD/python" "$VENV/bin/python" -m normgen.demo "$@" ;;
  test)
    do_build
    PATH=$VENV/bin:$PATH ctest --test-dir "$BUILD" --output-on-failure -j "$(nproc)" "$@" ;;
  bench)
    do_build
    env $(timing_env) PATH="$VENV/bin:$PATH" PYTHONPATH="$BUILD/python" "$VENV/bin/python" "$ROOT/bench/run_bench.py" --build "$BUILD" "$@" ;;
  *)
    echo "usage: tools/dev.sh {demo|test|setup|build|bench|env}" >&2; exit 2 ;;
esac
