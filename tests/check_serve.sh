#!/bin/sh
# vlm serve over real HTTP on 127.0.0.1 with an ephemeral port, against the
# tiny Qwen2.5-VL (tests/serve_test.py does the talking); then SIGTERM while
# an answer streams: the answer ends whole and the server exits 0; then a
# full queue: 503 with Retry-After, the waiting request answered. A build
# without libmicrohttpd says so and skips (CI's has it: .ci/run checks).
cd "$(dirname "$0")/.."
BUILD=${1:-build}
VLM=${VLM_BIN:-$BUILD/vlm}
if "$VLM" serve -m x 2>&1 | grep -q "this build has no HTTP server"; then
    echo "SKIP: this build has no HTTP server (libmicrohttpd)"; exit 0
fi
command -v python3 >/dev/null || { echo "python3 is needed (apt-get install python3)"; exit 1; }
d="$BUILD/serve" && rm -rf "$d" && mkdir -p "$d" || exit 1
# start_server LOG ARGS...: the server in the background, $port once it listens
start_server() {
    log=$1; shift
    "$VLM" serve -m tests/data/tiny_qwen --port 0 "$@" 2> "$log" &
    pid=$!
    i=0
    until grep -q "loaded in" "$log"; do
        i=$((i + 1)); [ $i -lt 200 ] && kill -0 $pid 2>/dev/null || { echo "the server did not start"; cat "$log"; exit 1; }
        sleep 0.05
    done
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
}
start_server "$d/server.log" --parallel 4 --queue 64 -c 1024 --api-key sekrit --max-body-mib 1 -t 2
trap 'kill $pid 2>/dev/null' EXIT
# ASan's quarantine holds freed memory back: the RSS bound is for plain builds
case "$BUILD" in *san*) export VLM_SERVE_RSS=0 ;; esac
VLM_SERVE_DIR=$d python3 tests/serve_test.py "$port" "$VLM" tests/data/tiny_qwen tests/golden/qwen2_5_vl/image.png sekrit $pid || rc=1
kill -TERM $pid; wait $pid || { echo "exit status $? after SIGTERM"; rc=1; }
cat "$d/server.log"
[ -z "$rc" ] || exit 1

# SIGTERM while a long answer streams: it is finished, then the server stops with 0
start_server "$d/stop.log"
python3 - "$port" > "$d/stream.txt" <<'EOF' &
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=120)
c.request("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "go"}], "stream": True,
          "max_tokens": 3000, "temperature": 0}), {"Content-Type": "application/json"})
print(c.getresponse().read().decode())
EOF
client=$!
# once the answer is under way (a few seconds of tokens on the tiny model)
python3 - "$port" <<'EOF' || { echo "the long answer never showed as a busy slot"; kill $pid; exit 1; }
import sys, time, urllib.request
for _ in range(400):
    m = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1]).read().decode()
    if "vlm_slots_busy 1" in m:
        sys.exit(0)
    time.sleep(0.01)
sys.exit(1)
EOF
kill -TERM $pid
wait $client
wait $pid; st=$?
[ $st -eq 0 ] || { echo "exit status $st after SIGTERM during a stream"; cat "$d/stop.log"; exit 1; }
grep -q '"finish_reason":"length"' "$d/stream.txt" && tail -n 3 "$d/stream.txt" | grep -q "data: \[DONE\]" ||
    { echo "the stream in flight was cut by SIGTERM:"; tail -c 600 "$d/stream.txt"; exit 1; }
echo "SIGTERM during a stream: the answer finished (3000 tokens, [DONE]), exit status 0"

# A full queue: one slot busy with a long answer, one request waiting, the
# next refused with 503 and Retry-After; the waiting one is then answered.
start_server "$d/queue.log" --parallel 1 --queue 1
python3 - "$port" <<'EOF' || { kill $pid; exit 1; }
import http.client, json, sys, threading, time, urllib.request
port = int(sys.argv[1])
def post(body, out):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    out.append((r.status, r.getheader("Retry-After"), r.read()))
def gauge(name):
    m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port).read().decode()
    return float(next(l.split()[1] for l in m.splitlines() if l.startswith(name + " ")))
def wait_for(name, v):
    for _ in range(500):
        if gauge(name) == v:
            return True
        time.sleep(0.01)
    return False
long, waiting, refused = [], [], []
msgs = [{"role": "user", "content": "go"}]
a = threading.Thread(target=post, args=({"messages": msgs, "max_tokens": 3000, "temperature": 0}, long))
a.start()
ok = wait_for("vlm_slots_busy", 1)
b = threading.Thread(target=post, args=({"messages": msgs, "max_tokens": 4, "temperature": 0}, waiting))
b.start()
ok = ok and wait_for("vlm_queue_depth", 1)
post({"messages": msgs, "max_tokens": 4}, refused)
a.join(); b.join()
status, retry, body = refused[0]
print("queue full: %d, Retry-After %s, %s; the waiting request then %d, the long one %d" %
      (status, retry, json.loads(body)["error"]["message"], waiting[0][0], long[0][0]))
sys.exit(0 if ok and status == 503 and retry == "1" and waiting[0][0] == 200 and long[0][0] == 200 else 1)
EOF
kill -TERM $pid; wait $pid
