#!/usr/bin/env bash
# Compiles one of the README's C examples (the ```c block after the line with
# "<!-- MARKER:") as C99 against the built library, runs it and checks its output:
#   README-EXAMPLE: A*B = [[4,5],[10,11]] softmaxed row-wise: exp(4)/(exp(4)+exp(5)) = 1/(1+e)
#     = 0.2689.
#   README-EXAMPLE-KVCACHE: out[b][h][3] after 12 decode steps, from a float64 NumPy attention
#     over the bf16 values (k rows are multiples of 1/4, exact; v rows are thirds, rounded to
#     nearest even); each printed value is at least 2.7e-5 from a rounding boundary of %.4f,
#     above the float32 error bound (about 3e-6 for 12 keys of 4 features).
# Usage: readme_example.sh README.md MARKER INCLUDE_DIR LIB_DIR CC [SANITIZE]
# SANITIZE: meson's b_sanitize of the library build ("none" or e.g. "address,undefined"); a
# sanitized library needs a program built with the same runtime.
set -euo pipefail
readme=$1 marker=$2 inc=$3 libdir=$4 cc=$5 sanitize=${6:-none}
case "$marker" in
  README-EXAMPLE) expected="0.2689 0.7311 / 0.2689 0.7311 (*)" ;;
  README-EXAMPLE-KVCACHE) expected="0.6175 0.6475 / 0.6464 0.6789" ;;
  *) echo "unknown README example marker: $marker"; exit 2 ;;
esac
sanitize_flags=()
[ "$sanitize" = none ] || sanitize_flags=("-fsanitize=$sanitize")
# clang links its C++ sanitizer runtime (which the C++ library needs) only when asked to.
if [ "$sanitize" != none ] && $cc --version | grep -q clang; then
  sanitize_flags+=(-fsanitize-link-c++-runtime)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk -v m="<!-- $marker:" 'index($0, m) == 1 { armed = 1; next } armed && /^```c$/ { on = 1; next }
     on && /^```$/ { exit } on { print }' "$readme" > "$tmp/example.c"
lines=$(wc -l < "$tmp/example.c")
[ "$lines" -ge 5 ] || { echo "README example $marker not found"; exit 1; }
echo "README example $marker: $lines lines"
$cc -std=c99 -pedantic-errors -Wall -Wextra -Werror "${sanitize_flags[@]}" "$tmp/example.c" -I"$inc" -L"$libdir" \
  -lsimdattn -Wl,-rpath,"$libdir" -o "$tmp/example"
out=$("$tmp/example")
echo "$out"
# shellcheck disable=SC2053  # $expected is a pattern
if [[ "$out" == $expected ]]; then echo "README example $marker OK"; else
  echo "unexpected output (expected: $expected)"; exit 1; fi
