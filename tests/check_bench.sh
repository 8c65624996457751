#!/bin/sh
# vlm bench times the vision encoder of every family through the family's own
# bench_vision hook (cli/bench.c names none): on each tiny model a 640x480
# image gives vision tokens, tiled families take --tiles, whole-image
# families refuse it with a message.
cd "$(dirname "$0")/.."
VLM=${1:-build}/vlm
bad=0
for d in tests/data/tiny_*/; do
    [ -f "$d/config.json" ] || continue
    out=$("$VLM" bench -m "$d" -t 1 -p 8 -n 2 --image 640x480 2>&1 | tail -n 1)
    tok=$(echo "$out" | sed -n 's/.*"vision_tokens":\([0-9]*\).*/\1/p')
    ms=$(echo "$out" | sed -n 's/.*"vision_ms":\([-0-9.]*\).*/\1/p')
    case "$ms" in -*|"") echo "FAIL $d: no vision time: $out"; bad=1; continue ;; esac
    [ "${tok:-0}" -gt 0 ] || { echo "FAIL $d: no vision tokens: $out"; bad=1; continue; }
    echo "ok $d: $tok vision tokens"
done
out=$("$VLM" bench -m tests/data/tiny_idefics3 -t 1 -p 8 -n 2 --tiles 3 2>&1 | tail -n 1)
echo "$out" | grep -q '"vision_tiles":3,' || { echo "FAIL --tiles 3 on idefics3: $out"; bad=1; }
err=$("$VLM" bench -m tests/data/tiny_qwen -t 1 -p 8 -n 2 --tiles 3 2>&1 | head -n 1)
echo "$err" | grep -q 'not tiles' || { echo "FAIL --tiles on qwen2_5_vl gives no message: $err"; bad=1; }
exit $bad
