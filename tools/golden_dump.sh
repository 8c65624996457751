#!/bin/sh
# Dumps the logits, vision embeddings and greedy tokens of every golden case
# (1 and 2 threads) into OUTDIR, for checking that a refactor changes no bit:
#   sh tools/golden_dump.sh /tmp/before build      # on the old tree
#   sh tools/golden_dump.sh /tmp/after build       # on the new tree
#   sh tools/golden_dump.sh --compare /tmp/before /tmp/after
set -e
if [ "$1" = --compare ]; then
    n=0; bad=0
    for f in "$2"/*.safetensors; do
        g="$3/$(basename "$f")"; n=$((n+1))
        if ! cmp -s "$f" "$g"; then echo "DIFFERS: $(basename "$f")"; bad=$((bad+1)); fi
    done
    echo "$n dumps compared, $bad differ"
    [ "$bad" -eq 0 ] && [ "$n" -gt 0 ]
    exit
fi
out=$1; build=${2:-build}
mkdir -p "$out"
for d in tests/golden/*/; do
    [ -f "$d/case.json" ] || continue
    for t in 1 2; do
        "$build/vlm" golden "$d" -t $t --dump "$out/$(basename "$d")_t$t.safetensors" > /dev/null
    done
done
echo "dumped $(ls "$out" | wc -l) files to $out"
