#!/bin/sh
# Runs each libFuzzer target (make fuzz) for SECONDS with its seed corpus:
# fuzz/seeds/<target> plus the real files of that kind under tests/ (JSON
# configs and tokenizer configs, safetensors headers, images). New inputs go
# to build-fuzz/corpus_<target>, never into the seeds; a crash leaves its
# input in build-fuzz/artifacts/ and fails the run (copy it under tests/ as
# a regression file).   usage: tools/fuzz_smoke.sh SECONDS TARGET...
cd "$(dirname "$0")/.."
secs=$1; shift
mkdir -p build-fuzz/artifacts
status=0
for t in "$@"; do
    real="build-fuzz/real_$t"
    rm -rf "$real"; mkdir -p "$real" "build-fuzz/corpus_$t"
    case $t in
        json)  find tests/data tests/golden -name '*.json' -size -64k | while read -r f; do cp "$f" "$real/$(echo "$f" | tr / _)"; done ;;
        safetensors) find tests/data -name '*.safetensors' -size -256k | while read -r f; do cp "$f" "$real/$(echo "$f" | tr / _)"; done ;;
        image) find tests/data/img tests/golden -name '*.png' -size -256k | while read -r f; do cp "$f" "$real/$(echo "$f" | tr / _)"; done ;;
        tokenizer) for f in tests/data/tiny_*/tokenizer.json; do cp "$f" "$real/$(echo "$f" | tr / _)"; done ;;
        config) for f in tests/data/tiny_*/config.json tests/golden/*/model/config.json; do cp "$f" "$real/$(echo "$f" | tr / _)"; done ;;
        jinja) # the real chat templates (the target renders them for its default conversation)
            for f in tests/data/*/chat_template.jinja; do cp "$f" "$real/$(echo "$f" | tr / _)"; done
            for f in tests/data/*/tokenizer_config.json; do # the chat_template strings in them
                python3 -c 'import json,sys; t=json.load(open(sys.argv[1])).get("chat_template"); sys.stdout.write(t if isinstance(t, str) else "")' \
                    "$f" > "$real/$(echo "$f" | tr / _).jinja" 2>/dev/null || true
            done ;;
    esac
    dict=""
    [ -f "fuzz/$t.dict" ] && dict="-dict=fuzz/$t.dict"
    [ $t = safetensors ] && [ -f fuzz/st.dict ] && dict="-dict=fuzz/st.dict"
    if build-fuzz/fuzz_$t "build-fuzz/corpus_$t" "fuzz/seeds/$( [ $t = safetensors ] && echo st || echo $t)" "$real" \
        $dict -max_total_time="$secs" -max_len=262144 -rss_limit_mb=4096 -artifact_prefix=build-fuzz/artifacts/ \
        -print_final_stats=1 > "build-fuzz/smoke_$t.log" 2>&1; then
        echo "fuzz $t: $secs s, $(grep -m1 'stat::number_of_executed_units' "build-fuzz/smoke_$t.log" | awk '{print $2}') runs, no crash"
    else
        echo "FAIL fuzz $t:"; tail -n 30 "build-fuzz/smoke_$t.log"; status=1
    fi
done
exit $status
