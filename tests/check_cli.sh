#!/bin/sh
# The CLI checks every number: a bad value (out of range, trailing garbage,
# missing) is one line on stderr naming the option, and exit status 2, for
# each subcommand. `-p @FILE` and `-p -` read the prompt from a file and
# from stdin and answer as the same text given on the command line.
cd "$(dirname "$0")/.."
BUILD=${1:-build}
V="$BUILD/vlm"
M=tests/data/tiny_qwen
d="$BUILD/cli_check"
mkdir -p "$d"
bad=0
# expect_error OPTION ARGS...: status 2 and one stderr line naming OPTION
expect_error() {
    opt=$1; shift
    "$V" "$@" > "$d/out" 2> "$d/err" < /dev/null
    rc=$?
    lines=$(wc -l < "$d/err")
    if [ $rc -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -qF -- "$opt" "$d/err"; then
        echo "FAIL: vlm $*: status $rc, $lines stderr lines: $(cat "$d/err")"; bad=1
    fi
}
for v in -5 abc 2147483648 5x "" 0; do expect_error "-n" run -m $M -p hi -n "$v"; done
for v in abc nan inf -1 1e9; do expect_error "--temp" run -m $M -p hi --temp "$v"; done
for v in -3 0 1000 2.5; do expect_error "-t" run -m $M -p hi -t "$v"; done
expect_error "-c" run -m $M -p hi -c 10
expect_error "-c" run -m $M -p hi -c 99999999999
expect_error "--top-p" run -m $M -p hi --top-p 2
expect_error "--top-p" run -m $M -p hi --top-p 0
expect_error "--min-p" run -m $M -p hi --min-p -0.5
expect_error "--top-k" run -m $M -p hi --top-k -1
expect_error "--repeat-penalty" run -m $M -p hi --repeat-penalty 0
expect_error "--seed" run -m $M -p hi --seed -1
expect_error "--seed" run -m $M -p hi --seed 99999999999999999999999
expect_error "-n" run -m $M -p hi -n
expect_error "-p" run -m $M -p
expect_error "--bogus" run -m $M --bogus
expect_error "/nonexistent/prompt.txt" run -m $M -p @/nonexistent/prompt.txt
expect_error "-n" chat -m $M -n abc
expect_error "--frob" chat -m $M --frob
expect_error "-t" bench -m $M -t 1000
expect_error "-n" bench -m $M -n 0
expect_error "-c" info -m $M -c abc
expect_error "-t" golden tests/golden/qwen2_5_vl -t x
expect_error "--bench" preprocess --config $M --image tests/golden/qwen2_5_vl/image.png --bench -1
# the prompt from a file, from stdin, literally
q="What is in the picture?"
"$V" run -m $M -i tests/golden/qwen2_5_vl/image.png -n 6 -p "$q" > "$d/arg.txt" 2>/dev/null || bad=1
printf '%s\n' "$q" > "$d/q.txt"
"$V" run -m $M -i tests/golden/qwen2_5_vl/image.png -n 6 -p @"$d/q.txt" > "$d/file.txt" 2>/dev/null || bad=1
printf '%s\n' "$q" | "$V" run -m $M -i tests/golden/qwen2_5_vl/image.png -n 6 -p - > "$d/stdin.txt" 2>/dev/null || bad=1
cmp -s "$d/arg.txt" "$d/file.txt" || { echo "FAIL: -p @FILE answers differently from -p TEXT"; bad=1; }
cmp -s "$d/arg.txt" "$d/stdin.txt" || { echo "FAIL: -p - answers differently from -p TEXT"; bad=1; }
printf '@%s' "$q" > "$d/at.txt"
"$V" run -m $M -n 6 -p @"$d/at.txt" > "$d/at_file.txt" 2>/dev/null || bad=1
"$V" run -m $M -n 6 -p @@"$q" > "$d/at_at.txt" 2>/dev/null || bad=1
cmp -s "$d/at_file.txt" "$d/at_at.txt" || { echo "FAIL: -p @@TEXT is not the text @TEXT"; bad=1; }
"$V" info --cpu | grep -qE '^kernels +(avx2|scalar|neon|dotprod)' || { echo "FAIL: vlm info --cpu names no kernels"; bad=1; }
[ $bad -eq 0 ] && echo "cli: every bad number is one line naming its option; -p @FILE, -p - and -p @@ as promised"
exit $bad
