#!/bin/sh
# vlm quantize round trip: a golden case's model written quantized, then
# loaded from that folder, gives logits, vision embeddings and tokens bit
# for bit those of quantizing at load (vlm golden --dump), for the
# families whose loaders differ (tied tables, Gemma 4's per-layer table and
# embedding scale, InternVL's fused qkv and separate lm_head, the vision
# towers with --quant-vision); the folder keeps the other files and says
# how it was made.
cd "$(dirname "$0")/.."
VLM=${1:-build}/vlm
T=${1:-build}/check_quantize
rm -rf "$T"
mkdir -p "$T"
bad=0
for spec in qwen2_5_vl:q4_0: gemma4:q8_0: gemma4_moe:q4_0: internvl_orig:q4_0: idefics3:q8_0:--quant-vision qwen3_vl_moe:q4_0:; do
    c=${spec%%:*}; rest=${spec#*:}; q=${rest%%:*}; extra=${rest#*:}
    d="$T/$c-$q"
    mkdir -p "$d"
    for f in tests/golden/$c/*; do [ "$(basename "$f")" = model ] || ln -s "$PWD/$f" "$d/"; done
    if ! "$VLM" quantize -m tests/golden/$c/model -o "$d/model" --type $q $extra 2> "$d.log"; then
        echo "FAIL $c $q: quantize: $(cat "$d.log")"; bad=1; continue
    fi
    "$VLM" golden tests/golden/$c --quant $q $extra --dump "$d/at_load.safetensors" > "$d/at_load.json" 2>&1
    # no --quant here: what the folder stores is what runs
    "$VLM" golden "$d" --dump "$d/saved.safetensors" > "$d/saved.json" 2>&1
    if ! cmp -s "$d/at_load.safetensors" "$d/saved.safetensors"; then
        echo "FAIL $c $q $extra: the saved folder's outputs differ from quantizing at load"; bad=1; continue
    fi
    grep -q '"pass":true' "$d/at_load.json" || { echo "FAIL $c $q: $(cat "$d/at_load.json")"; bad=1; continue; }
    grep -q "\"quant_method\": \"vlm\", \"format\": \"$q\"" "$d/model/config.json" || { echo "FAIL $c: config.json"; bad=1; }
    for f in tests/golden/$c/model/*; do
        b=$(basename "$f")
        case "$b" in *.safetensors|config.json) ;; *) cmp -s "$f" "$d/model/$b" || { echo "FAIL $c: $b not copied"; bad=1; } ;; esac
    done
    echo "ok $c $q $extra: $(cat "$d.log")"
done
# bad arguments: clear errors, nothing half-written
"$VLM" quantize -m tests/golden/qwen2_5_vl/model -o "$T/x" --type q5_1 2> "$T/err.log" && bad=1
grep -q "unknown --type 'q5_1'" "$T/err.log" || { echo "FAIL unknown type: $(cat "$T/err.log")"; bad=1; }
"$VLM" quantize -m "$T/none" -o "$T/y" --type q8_0 2> "$T/err.log" && bad=1
[ -s "$T/err.log" ] && [ ! -f "$T/y/model.safetensors" ] || { echo "FAIL missing model: $(cat "$T/err.log")"; bad=1; }
# an AWQ checkpoint (or a folder vlm quantize wrote) is refused: quantized already
"$VLM" quantize -m tests/awq/qwen2_5_vl/model -o "$T/z" --type q4_0 2> "$T/err.log" && bad=1
grep -q "quantized already" "$T/err.log" && [ ! -e "$T/z" ] || { echo "FAIL AWQ input: $(cat "$T/err.log")"; bad=1; }
exit $bad
