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
# the library is built for AVX3 and the scalar fallback only (the best the CPU has runs), which
# keeps CI in its time.
simdattn_fuzz_build() {
  if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang CXX=clang++ meson setup build-fuzz -Dfuzz=enabled -Dbench=disabled -Dtests=disabled \
      -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized \
      '-Dcpp_args=-DHWY_DISABLED_TARGETS=(HWY_SSSE3|HWY_SSE4|HWY_AVX2)'
  fi
  ninja -C build-fuzz
}
