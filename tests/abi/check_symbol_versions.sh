#!/usr/bin/env bash
# Usage: check_symbol_versions.sh LIBRARY ABI_PROGRAM
# The symbol versions of simdattn_sdpa_options_init (src/simdattn.map, src/c_api.cc): LIBRARY
# defines it as SIMDATTN_0.1 (hidden, what unversioned 0.1 references bind) and as the default
# @@SIMDATTN_0.2 (what new links and dlsym get). ABI_PROGRAM (tests/abi/abi_0_1.c) must need
# libsimdattn.so.0 and reference the initialiser unversioned, or its run proves nothing.
set -euo pipefail
lib=$1
program=$2
fail() { echo "FAIL: $*" >&2; exit 1; }

defs=$(nm -D --defined-only "$lib")
grep -q ' simdattn_sdpa_options_init@SIMDATTN_0\.1$' <<<"$defs" ||
  fail "$lib does not define simdattn_sdpa_options_init@SIMDATTN_0.1"
grep -q ' simdattn_sdpa_options_init@@SIMDATTN_0\.2$' <<<"$defs" ||
  fail "$lib does not define the default simdattn_sdpa_options_init@@SIMDATTN_0.2"
# objdump -T puts a hidden (non-default) version in parentheses.
objdump -T "$lib" | grep -q '(SIMDATTN_0\.1) *simdattn_sdpa_options_init$' ||
  fail "objdump -T: the SIMDATTN_0.1 initialiser is not the hidden (non-default) version"
echo "library: simdattn_sdpa_options_init@SIMDATTN_0.1 and @@SIMDATTN_0.2"

readelf -d "$program" | grep -q '(NEEDED).*\[libsimdattn\.so\.0\]' ||
  fail "$program does not need libsimdattn.so.0"
nm -D --undefined-only "$program" | grep -q ' U simdattn_sdpa_options_init$' ||
  fail "$program's reference to simdattn_sdpa_options_init is not unversioned"
echo "program: needs libsimdattn.so.0, unversioned simdattn_sdpa_options_init"
