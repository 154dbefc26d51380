#!/bin/sh
# Sets kiln up on Debian 12: installs the Debian packages it needs (as root,
# or through sudo), then configures and builds it in build/.
#
#   ./setup.sh          install and build
#   ./setup.sh test     ... then run every test suite, plain and under
#                       AddressSanitizer + UndefinedBehaviorSanitizer
#   ./setup.sh fashion  ... also install Fashion-MNIST (dataset-fashion-mnist,
#                       30 MB) for examples/fashion_*.kiln
#   ./setup.sh bench [bench/run options]
#                       ... also install the benchmark's references (PyTorch,
#                       OpenCV, OpenBLAS, BLIS from Debian; ONNX Runtime from
#                       npm into bench/ref/node_modules), then run bench/run
set -eu
cd "$(dirname "$0")"

PKGS="build-essential pkg-config meson ninja-build llvm-19-dev libcmocka-dev
      python3-numpy zlib1g-dev libzstd-dev wamerican"
if [ "${1:-}" = "fashion" ]; then
  PKGS="$PKGS dataset-fashion-mnist"
fi
if [ "${1:-}" = "bench" ]; then
  PKGS="$PKGS python3-torch python3-opencv python3-onnx libopenblas-dev libblis-dev"
  command -v npm >/dev/null || PKGS="$PKGS nodejs npm"
fi

need=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
  echo "setup: installing$need"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
fi

build() {  # build DIR [meson options...]
  dir=$1; shift
  [ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >/dev/null
  ninja -C "$dir"
}

build build
if [ "${1:-}" = "bench" ]; then
  shift
  # ONNX Runtime is not packaged by Debian; the npm package carries its CPU
  # library (bench/ref/.npmrc turns off install scripts, which only fetch
  # GPU builds from outside the registry).
  [ -d bench/ref/node_modules/onnxruntime-node ] || (cd bench/ref && npm ci --no-audit --no-fund)
  exec bench/run "$@"
fi
[ "${1:-}" = "test" ] || exit 0

status=0
# meson runs suites side by side: OpenMP threads that spin at barriers
# would fight each other for the 2 cores, so waiting threads sleep.
export OMP_WAIT_POLICY=passive
# Every suite compiles its code afresh (the cache's own test turns it on).
export KILN_CACHE=off
meson test -C build --print-errorlogs || status=1
# JIT'd code runs under the sanitizers too; LLVM's own allocations that live
# for the process are not ours to report, so leak checking stays off here.
build build-san -Db_sanitize=address,undefined -Db_lundef=false
# The -O0/-O3 differential test runs all 200 models in the plain build;
# under the sanitizers 40 of them exercise the same code.
KILN_DIFF_COUNT=40 \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-san --print-errorlogs --timeout-multiplier 4 || status=1
python3 - build/meson-logs/testlog.json build-san/meson-logs/testlog.json <<'PY' || true
import json, sys
ok = bad = skip = 0
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)["result"]
        ok += r == "OK"; skip += r == "SKIP"; bad += r not in ("OK", "SKIP", "EXPECTEDFAIL")
print(f"tests: {ok} passed, {bad} failed, {skip} skipped")
PY
exit $status
