# Shared set-up for tools/run-tests and tools/run-bench (sourced, not run).
# Debian packages the build, tests and benchmarks need.
# clang and its runtimes (libFuzzer) build the fuzz targets (tools/run-fuzz); matplotlib draws
# tools/run-bench's plots; OpenMPI builds libsimdattn_mpi and runs its tests under mpirun.
SIMDATTN_DEBS=(g++ pkg-config meson ninja-build libhwy-dev libtbb-dev libopenblas-dev doctest-dev
  libbenchmark-dev libdnnl-dev python3-numpy python3-torch python3-matplotlib clang libclang-rt-14-dev
  libopenmpi-dev openmpi-bin)

simdattn_install_deps() {
  local missing=()
  for p in "${SIMDATTN_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "Installing missing Debian packages: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo)
    else
      echo "error: missing packages (${missing[*]}) and not root: run as root or install them" >&2
      return 1
    fi
  fi
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# simdattn_build DIR [meson setup args...]: configures DIR once, then builds it.
simdattn_build() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@"
  fi
  ninja -C "$dir"
}

# simdattn_fuzz_build: configures build-fuzz/ once (clang, ASan+UBSan, the libFuzzer targets),
# then builds it. The fuzzers explore inputs, not SIMD targets (the suites run every target):
# the library is built for AVX2, which every x86-64 CPU we meet runs, and the SCALAR baseline
# (as GCC builds it; clang's EMU128 took 10x as long to compile under ASan), each input picking
# one (fuzz_common.h's TargetOfInput). -O1 and line tables only, as OSS-Fuzz builds, asserts on:
# the -O2 -g build of AVX3 and EMU128 took over 9 minutes of CI's 30 on a 2-core Zen 3.
simdattn_fuzz_build() {
  if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang CXX=clang++ meson setup build-fuzz -Dfuzz=enabled -Dbench=disabled -Dtests=disabled \
      -Db_sanitize=address,undefined -Db_lundef=false -Doptimization=1 -Ddebug=false \
      -Db_ndebug=false '-Dcpp_args=-gline-tables-only -DHWY_BROKEN_EMU128=1
      -DHWY_DISABLED_TARGETS=(HWY_SSSE3|HWY_SSE4|HWY_AVX3|HWY_AVX3_DL)'
  fi
  ninja -C build-fuzz
}
