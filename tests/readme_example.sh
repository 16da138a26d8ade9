#!/usr/bin/env bash
# Compiles the README's C example (the ```c block after the README-EXAMPLE marker) as C99
# against the built library, runs it and checks its output against A*B = [[4,5],[10,11]]
# softmaxed row-wise: exp(4)/(exp(4)+exp(5)) = 1/(1+e) = 0.2689.
# Usage: readme_example.sh README.md INCLUDE_DIR LIB_DIR CC [SANITIZE]
# SANITIZE: meson's b_sanitize of the library build ("none" or e.g. "address,undefined"); a
# sanitized library needs a program built with the same runtime.
set -euo pipefail
readme=$1 inc=$2 libdir=$3 cc=$4 sanitize=${5:-none}
sanitize_flags=()
[ "$sanitize" = none ] || sanitize_flags=("-fsanitize=$sanitize")
# clang links its C++ sanitizer runtime (which the C++ library needs) only when asked to.
if [ "$sanitize" != none ] && $cc --version | grep -q clang; then
  sanitize_flags+=(-fsanitize-link-c++-runtime)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '/README-EXAMPLE/ { armed = 1; next } armed && /^```c$/ { on = 1; next }
     on && /^```$/ { exit } on { print }' "$readme" > "$tmp/example.c"
lines=$(wc -l < "$tmp/example.c")
[ "$lines" -ge 5 ] || { echo "README example not found"; exit 1; }
echo "README example: $lines lines"
$cc -std=c99 -pedantic-errors -Wall -Wextra -Werror "${sanitize_flags[@]}" "$tmp/example.c" -I"$inc" -L"$libdir" \
  -lsimdattn -Wl,-rpath,"$libdir" -o "$tmp/example"
out=$("$tmp/example")
echo "$out"
case "$out" in
  "0.2689 0.7311 / 0.2689 0.7311 ("*")") echo "README example OK" ;;
  *) echo "unexpected output"; exit 1 ;;
esac
