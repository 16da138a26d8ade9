#!/usr/bin/env bash
# Usage: check_exports.sh LIBRARY WANT_SONAME
# Fails unless LIBRARY exports at least one dynamic symbol, every exported (defined) dynamic
# symbol starts with simdattn_, and its SONAME is WANT_SONAME.
set -euo pipefail
lib=$1
want_soname=$2

# Columns: value, type, name[@[@]VERSION]. Type A entries are symbol-version definitions (if a
# version node is ever added), not code or data; the @VERSION suffix is not part of the name.
symbols=$(nm -D --defined-only "$lib" | awk 'NF >= 3 && $2 != "A" { sub(/@.*/, "", $3); print $3 }')
if [ -z "$symbols" ]; then
  echo "FAIL: $lib exports no symbols" >&2
  exit 1
fi
stray=$(grep -v '^simdattn_' <<<"$symbols" || true)
if [ -n "$stray" ]; then
  echo "FAIL: $lib exports symbols outside the simdattn_ prefix:" >&2
  echo "$stray" >&2
  exit 1
fi
echo "exported: $(wc -l <<<"$symbols") simdattn_* symbols"

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
if [ "$soname" != "$want_soname" ]; then
  echo "FAIL: SONAME of $lib is '${soname}', want '${want_soname}'" >&2
  exit 1
fi
echo "soname: $soname"
