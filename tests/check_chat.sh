#!/bin/sh
# vlm chat driven through a pseudo-terminal (tmux): Ctrl-C while an answer
# is written stops it and returns to the prompt, the conversation goes on,
# /help lists the commands, an unknown /command is an error, /image and
# /reset confirm, the Up arrow recalls the last line (libedit builds), and
# Ctrl-C at the prompt ends the chat with status 0.
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
command -v tmux >/dev/null || { echo "tmux is needed (apt-get install tmux)"; exit 1; }
d="$BUILD/chat"
mkdir -p "$d"
rm -f "$d/exit"
sock="$d/tmux.sock"
T="tmux -S $sock"
$T kill-server 2>/dev/null || true
# a long answer to interrupt: no end-of-sequence, a large budget
$T new-session -d -s chat -x 150 -y 50 \
    "sh -c \"trap '' INT; $BUILD/vlm chat -m tests/data/tiny_qwen -c 65536 -n 60000 --ignore-eos; echo \\\$? > $d/exit; sleep 30\""
trap '$T kill-server 2>/dev/null || true' EXIT
screen() { $T capture-pane -t chat -p -J -S -200 | sed 's/ *$//'; }  # -J: wrapped lines joined
# wait_for TEXT: until the screen shows TEXT (10 s at most)
wait_for() {
    i=0
    while ! screen | grep -qF -- "$1"; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "timed out waiting for: $1"; screen | tail -20; exit 1; }
        sleep 0.1
    done
}
count() { screen | grep -cF -- "$1" || true; }
wait_for_prompt() {
    i=0
    while [ "$(screen | grep -v '^$' | tail -n 1)" != ">" ]; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "no prompt"; screen | tail -20; exit 1; }
        sleep 0.1
    done
}
wait_for_prompt
$T send-keys -t chat "hello there" Enter
sleep 1
$T send-keys -t chat C-c
wait_for "[stopped]"
wait_for_prompt
$T send-keys -t chat "/help" Enter
wait_for "/reset        forget the conversation"
$T send-keys -t chat "/frobnicate" Enter
wait_for "unknown command '/frobnicate'"
$T send-keys -t chat "/image tests/golden/qwen2_5_vl/image.png" Enter
wait_for "[image tests/golden/qwen2_5_vl/image.png attached to your next message]"
$T send-keys -t chat "/image /nonexistent.png" Enter
wait_for "vlm chat: image: cannot open /nonexistent.png"
$T send-keys -t chat "/reset" Enter
wait_for "[conversation forgotten]"
if ldd "$BUILD/vlm" | grep -q libedit; then
    $T send-keys -t chat Up Enter   # the last line again: /reset
    i=0
    while [ "$(count '[conversation forgotten]')" -lt 2 ]; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "Up arrow did not recall the last line"; screen | tail -5; exit 1; }
        sleep 0.1
    done
    screen | grep -qF '^[[A' && { echo "Up arrow came through as ^[[A"; exit 1; }
    echo "line editing: the Up arrow recalls the last line"
else
    echo "built without libedit: no line editing to check"
fi
# the conversation still works after the stop (another interrupted answer)
$T send-keys -t chat "and again" Enter
sleep 0.5
$T send-keys -t chat C-c
i=0
while [ "$(count '[stopped]')" -lt 2 ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "second answer not stopped"; screen | tail -5; exit 1; }
    sleep 0.1
done
wait_for_prompt
$T send-keys -t chat C-c
i=0
while [ ! -s "$d/exit" ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "Ctrl-C at the prompt did not end the chat"; screen | tail -5; exit 1; }
    sleep 0.1
done
[ "$(cat "$d/exit")" = 0 ] || { echo "chat exited with $(cat "$d/exit")"; exit 1; }
echo "chat: Ctrl-C stops answers and ends at the prompt; /help, unknown commands, /image, /reset as promised"
