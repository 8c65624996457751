#!/bin/sh
# The embedder's build (README "Embedding"): the generated vlm.h with
# VLM_IMPLEMENTATION in one file, the generated vlm_cpu.c and models/*.c,
# nothing from src/ or cli/, compiled by the embedder's own strict line
# (-std=c11 -Wall -Wextra -Wpedantic -Werror, no feature macros, no -march)
# with gcc and with clang:
#  - examples/caption.c next to a two-line vlm_impl.c;
#  - tests/embed/game.c, which implements its own stb_image in the same
#    file as VLM_IMPLEMENTATION;
#  - tests/embed/robot.cpp, a C++17 program over the header.
# Each answers exactly as the Makefile's caption build does.
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
d="$BUILD/embed"
mkdir -p "$d"
IMG=tests/golden/qwen2_5_vl/image.png
"$BUILD/examples/caption" tests/data/tiny_qwen $IMG > "$d/makefile.txt"
[ -s "$d/makefile.txt" ] || { echo "the Makefile's caption printed nothing"; exit 1; }
printf '#define VLM_IMPLEMENTATION\n#include "vlm.h"\n' > "$d/vlm_impl.c"
STRICT="-std=c11 -O1 -Wall -Wextra -Wpedantic -Werror -I."
LIBS="-lm -lpthread"
n=0
for cc in gcc clang; do
    command -v $cc >/dev/null || continue
    o="$d/$cc"
    mkdir -p "$o"
    # the library's objects, compiled once per compiler
    # (two at a time: the machines have two cores)
    $cc $STRICT -c "$d/vlm_impl.c" -o "$o/vlm_impl.o" & p1=$!
    $cc $STRICT -c tests/embed/game.c -o "$o/game_main.o" & p2=$!
    wait $p1; wait $p2
    $cc $STRICT -c vlm_cpu.c -o "$o/vlm_cpu.o" & p1=$!
    (for m in models/*.c; do $cc $STRICT -c "$m" -o "$o/m_$(basename "$m" .c).o" || exit 1; done) & p2=$!
    wait $p1; wait $p2
    $cc $STRICT -pthread -o "$o/caption" examples/caption.c "$o/vlm_impl.o" "$o/vlm_cpu.o" "$o"/m_*.o $LIBS
    $cc -pthread -o "$o/game" "$o/game_main.o" "$o/vlm_cpu.o" "$o"/m_*.o $LIBS
    # built for a baseline x86-64, the kernels are still the fastest the CPU runs
    printf '#include "vlm.h"\n#include <stdio.h>\nint main(void) { puts(vlm_cpu_kernels()); return 0; }\n' > "$o/kernels.c"
    $cc $STRICT -pthread -o "$o/kernels" "$o/kernels.c" "$o/vlm_impl.o" "$o/vlm_cpu.o" "$o"/m_*.o $LIBS
    want=$(VLM_KERNELS= "$BUILD/vlm" info --cpu | sed -n 's/^kernels *\([a-z0-9]*\).*/\1/p')
    got=$(VLM_KERNELS= "$o/kernels")
    [ "$got" = "$want" ] || { echo "$cc: the embedded build picks kernels '$got', the Makefile build '$want'"; exit 1; }
    "$o/caption" tests/data/tiny_qwen $IMG > "$o/caption.txt"
    "$o/game" tests/data/tiny_qwen $IMG > "$o/game.txt"
    cmp "$o/caption.txt" "$d/makefile.txt"
    cmp "$o/game.txt" "$d/makefile.txt"
    cxx=$([ $cc = gcc ] && echo g++ || echo clang++)
    if command -v $cxx >/dev/null; then
        $cxx -std=c++17 -O2 -Wall -Wextra -Wpedantic -Werror -I. -pthread -o "$o/robot" tests/embed/robot.cpp \
            "$o/vlm_impl.o" "$o/vlm_cpu.o" "$o"/m_*.o $LIBS
        "$o/robot" tests/data/tiny_qwen $IMG > "$o/robot.txt"
        cmp "$o/robot.txt" "$d/makefile.txt"
    fi
    n=$((n + 1))
    echo "$cc: kernels $got; caption, game (own stb_image in the same file) and robot (C++17) answer as the Makefile build"
done
[ $n -gt 0 ] || { echo "no C compiler"; exit 1; }
echo "answer: $(head -c 60 "$d/makefile.txt")"
