#!/usr/bin/env bash
# libFuzzer on the runtime API: builds tests/fuzz/fuzz_runtime.cpp and the runtime with
# clang's -fsanitize=fuzzer,address,undefined against an existing build's kernels, then
# fuzzes for SECONDS (default 60) from tests/fuzz/corpus. Inputs that crash are written
# to tests/fuzz/corpus/ (crash-*; NORMGEN_FUZZ_ARTIFACTS=DIR elsewhere): commit them,
# ctest fuzz_runtime replays them. ctest fuzz_libfuzzer runs it for 20 s.
#   tools/fuzz.sh [SECONDS]        (after tools/dev.sh build; Debian: clang-14 libclang-rt-14-dev)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${NORMGEN_BUILD_DIR:-$ROOT/build}
SECONDS_TO_RUN=${1:-60}
CXX=$(command -v clang++-14 || command -v clang++ || true)
[ -n "$CXX" ] || { echo "clang++ not found (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 2; }
# HalideRuntime.h from the Halide the build used (its Python executable's halide wheel).
PY=$(sed -n 's/^_Python_EXECUTABLE:INTERNAL=//p' "$BUILD/CMakeCache.txt")
HALIDE_INCLUDE=$("$PY" -c 'import halide, os; print(os.path.dirname(halide.__file__) + "/include")')
OUT=$BUILD/fuzz_runtime_libfuzzer
if [ ! -x "$OUT" ] || [ -n "$(find "$ROOT/runtime" "$ROOT/tests/fuzz" -newer "$OUT" -name '*.[ch]*' | head -1)" ]; then
  echo "[fuzz] building $OUT with $CXX" >&2
  "$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -DNORMGEN_BUILDING -DNORMGEN_WITH_CUDA=1 -I"$ROOT/runtime/include" -I"$ROOT/runtime/src" \
    -I"$BUILD" -I"$BUILD/generated" -I"$HALIDE_INCLUDE" "$ROOT"/runtime/src/*.cpp "$ROOT/tests/fuzz/fuzz_runtime.cpp" \
    -Wl,--start-group "$BUILD"/lib*.a -Wl,--end-group -ldl -lpthread -o "$OUT"
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$ROOT"/tests/fuzz/corpus/* "$WORK/"
ARTIFACTS=${NORMGEN_FUZZ_ARTIFACTS:-$ROOT/tests/fuzz/corpus}
mkdir -p "$ARTIFACTS"
"$OUT" -max_total_time="$SECONDS_TO_RUN" -print_final_stats=1 -artifact_prefix="$ARTIFACTS/" "$WORK"
