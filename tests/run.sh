#!/bin/sh
# Runs every unit test binary and every golden case; prints "N passed, N failed".
BUILD=${1:-build}
# Binaries of another machine (make test TARGET=...): each behind a wrapper
# that runs it under $VLM_RUNNER, in $BUILD/run/, which the tests then take
# as the build directory.
if [ -n "$VLM_RUNNER" ]; then
    W="$BUILD/run"
    rm -rf "$W" && mkdir -p "$W/tests" "$W/examples" || exit 1
    for f in "$BUILD/vlm" "$BUILD/vlm.exe" "$BUILD"/tests/test_* "$BUILD"/examples/*; do
        [ -f "$f" ] && [ -x "$f" ] || continue
        w="$W/${f#"$BUILD"/}" && w=${w%.exe} # Windows' .exe: the wrapper goes by the plain name
        printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$VLM_RUNNER" "$PWD/$f" > "$w" && chmod +x "$w"
    done
    BUILD=$W
fi
# Tests that drive the CLI and the examples find them here.
export VLM_BIN="$BUILD/vlm" VLM_CAPTION="$BUILD/examples/caption"
pass=0; fail=0; failed=""
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    if "$t" > "$BUILD/$name.log" 2>&1; then pass=$((pass+1)); echo "PASS $name"
    else fail=$((fail+1)); failed="$failed $name"; echo "FAIL $name"; tail -n 20 "$BUILD/$name.log"; fi
done
for t in tests/check_*.sh; do
    name=$(basename "$t" .sh)
    # under emulation the bench's machine probes (a large matmul, a memory
    # stream) take minutes and measure nothing; the embedder's build is the
    # host's (the native run checks it)
    # and Wine's console takes no Ctrl-C from tmux
    case "$VLM_RUNNER:$name" in
    :*) ;;
    *:check_bench|*:check_embed|*wine*:check_chat) echo "SKIP $name (emulated)"; continue ;;
    esac
    if sh "$t" "$BUILD" > "$BUILD/$name.log" 2>&1; then pass=$((pass+1)); echo "PASS $name"
    else fail=$((fail+1)); failed="$failed $name"; echo "FAIL $name"; tail -n 20 "$BUILD/$name.log"; fi
done
# every golden case under each kernel variant the CPU runs and in both
# compute modes (the default variant in f32 as golden:CASE; the others as
# golden:CASE@VARIANT[-bf16])
first=1
for k in $(VLM_KERNELS= "$BUILD/vlm" info --cpu | tr -d '\r' | sed -n 's/^runs *//p'); do
  for mode in f32 bf16; do
    for d in tests/golden/*/; do
        [ -f "$d/case.json" ] || continue
        c=$(basename "$d")
        if [ $first -eq 0 ] || [ $mode = bf16 ]; then c="$c@$k"; [ $mode = f32 ] || c="$c-bf16"; fi
        name=golden:$c
        if VLM_KERNELS=$k "$BUILD/vlm" golden "$d" --compute $mode > "$BUILD/golden_$c.log" 2>&1; then
            pass=$((pass+1)); echo "PASS $name $(tail -n 1 "$BUILD/golden_$c.log")"
        else fail=$((fail+1)); failed="$failed $name"; echo "FAIL $name"; tail -n 5 "$BUILD/golden_$c.log"; fi
    done
  done
  first=0
done
# AWQ checkpoints (tools/pack_awq.py) under each kernel variant
for k in $(VLM_KERNELS= "$BUILD/vlm" info --cpu | tr -d '\r' | sed -n 's/^runs *//p'); do
    for d in tests/awq/*/; do
        c=$(basename "$d")_awq@$k
        if VLM_KERNELS=$k "$BUILD/vlm" golden "$d" > "$BUILD/golden_$c.log" 2>&1; then
            pass=$((pass+1)); echo "PASS golden:$c $(tail -n 1 "$BUILD/golden_$c.log")"
        else fail=$((fail+1)); failed="$failed golden:$c"; echo "FAIL golden:$c"; tail -n 5 "$BUILD/golden_$c.log"; fi
    done
done
# quantized weights on the default kernels: errors against the f32
# reference within the case's noise bound (cli/golden.c), tokens reported
for q in q8_0 q4_0; do
    for d in tests/golden/*/; do
        [ -f "$d/case.json" ] || continue
        c=$(basename "$d")@$q
        if "$BUILD/vlm" golden "$d" --quant $q > "$BUILD/golden_$c.log" 2>&1; then
            pass=$((pass+1)); echo "PASS golden:$c $(tail -n 1 "$BUILD/golden_$c.log")"
        else fail=$((fail+1)); failed="$failed golden:$c"; echo "FAIL golden:$c"; tail -n 5 "$BUILD/golden_$c.log"; fi
    done
done
[ -z "$failed" ] || echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
