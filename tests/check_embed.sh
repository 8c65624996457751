#!/bin/sh
# The embedder's build (README "Using the library"): the generated vlm.h with
# VLM_IMPLEMENTATION in one file, the generated vlm_cpu.c and models/*.c,
# nothing from src/ or cli/, compiled with a plain command line; the caption
# example built that way answers exactly as the one built by the Makefile.
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
d="$BUILD/embed"
mkdir -p "$d"
printf '#define VLM_IMPLEMENTATION\n#include "vlm.h"\n' > "$d/vlm_impl.c"
${CC:-cc} -std=c11 -O2 -march=native -D_GNU_SOURCE -I. -pthread -o "$d/caption" \
    examples/caption.c "$d/vlm_impl.c" vlm_cpu.c models/*.c -lopenblas -lm
"$d/caption" tests/data/tiny_qwen tests/golden/qwen2_5_vl/image.png > "$d/embedded.txt"
"$BUILD/examples/caption" tests/data/tiny_qwen tests/golden/qwen2_5_vl/image.png > "$d/makefile.txt"
[ -s "$d/embedded.txt" ] || { echo "embedded caption printed nothing"; exit 1; }
cmp "$d/embedded.txt" "$d/makefile.txt"
echo "embedded build answers as the Makefile build: $(head -c 60 "$d/embedded.txt")"
