"""vlm serve over real HTTP (tests/check_serve.sh starts the server): answers
equal `vlm run`'s with the same greedy settings, streamed or not, with an
image as a data URI; the side endpoints parse; every bad request is a 4xx
with an OpenAI-shaped error and the server answers after it; 8 clients x 25
mixed requests (three rounds), some streaming, some hanging up mid-stream:
every finished answer right, no slot leaked, memory flat after the first
round. Python's standard library only."""
import base64
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading

PORT = int(sys.argv[1])
VLM, MODEL, IMAGE, KEY, PID = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
AUTH = {"Authorization": "Bearer " + KEY}
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL", what, flush=True)


def request(method, path, body=None, headers=None, raw=None):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    h = dict(AUTH if headers is None else headers)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        h["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    c.close()
    return out


def chat(messages, stream=False, **params):
    body = dict(messages=messages, temperature=0, max_tokens=8)
    body.update(params)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    status, headers, data = request("POST", "/v1/chat/completions", body)
    if status != 200:
        return status, json.loads(data), None
    if not stream:
        j = json.loads(data)
        return status, j, j["choices"][0]["message"]["content"]
    events = [e[len("data: "):] for e in data.decode().split("\n\n") if e]
    check(events[-1] == "[DONE]", "a stream ends with [DONE]")
    chunks = [json.loads(e) for e in events[:-1]]
    check(chunks[0]["choices"][0]["delta"].get("role") == "assistant", "the first chunk gives the role")
    check(chunks[-1]["choices"] == [] and "usage" in chunks[-1], "include_usage: a last chunk with the usage")
    check(chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length"), "the chunk before the usage finishes")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    return status, chunks[-1], text


def vlm_run(prompt, image=None, system=None, stop=None):
    cmd = [VLM, "run", "-m", MODEL, "-p", prompt, "-n", "8"] + (["--stop", stop] if stop else [])
    if image:
        cmd += ["-i", image]
    if system:
        cmd += ["-s", system]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout
    return out[:-1].decode("utf-8", errors="replace")  # less the final newline


def image_uri(path):
    return "data:image/png;base64," + base64.b64encode(open(path, "rb").read()).decode()


def user(text, image=None):
    if image is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": text}]}


# ------------------------------------------------------------------ answers equal vlm run's
want_text = vlm_run("Say hello.")
want_sys = vlm_run("Say hello.", system="You are terse.")
want_img = vlm_run("What is in the picture?", image=IMAGE)
uri = image_uri(IMAGE)
for stream in (False, True):
    s, j, text = chat([user("Say hello.")], stream)
    check(s == 200 and text == want_text, "text answer (stream=%s): %r vs vlm run %r" % (stream, text, want_text))
    s, j, text = chat([{"role": "system", "content": "You are terse."}, user("Say hello.")], stream)
    check(s == 200 and text == want_sys, "with a system message (stream=%s): %r vs %r" % (stream, text, want_sys))
    s, j, text = chat([user("What is in the picture?", uri)], stream)
    check(s == 200 and text == want_img, "image as a data URI (stream=%s): %r vs vlm run -i %r" % (stream, text, want_img))
print("answers equal vlm run's: text %r, image %r" % (want_text, want_img))



# a follow-up turn reuses the slot's cache; the same answer as without it
s, j1, a1 = chat([user("What is in the picture?", uri)])
conv = [user("What is in the picture?", uri), {"role": "assistant", "content": a1}, user("And the colour?")]
s, j2, a2 = chat(conv)
check(j2["usage"]["prompt_tokens_details"]["cached_tokens"] > j2["usage"]["prompt_tokens"] // 2,
      "a follow-up reuses the cached prefix: %r" % j2["usage"])
s, j3, a3 = chat([{"role": "system", "content": "x"}] + conv)  # another prefix: computed anew
check(a2 is not None and s == 200, "follow-up answered")
print("follow-up: %d of %d prompt tokens cached" % (j2["usage"]["prompt_tokens_details"]["cached_tokens"],
                                                   j2["usage"]["prompt_tokens"]))
stop = next(want_text[i:i + 2] for i in range(2, len(want_text)) if want_text[i:i + 2].isascii())
want_stop = vlm_run("Say hello.", stop=stop)
for stream in (False, True):
    s, j, text = chat([user("Say hello.")], stream, stop=["zzz", stop])
    check(s == 200 and text == want_stop and text == want_text[:want_text.index(stop)],
          "stop %r (stream=%s): %r vs vlm run --stop %r" % (stop, stream, text, want_stop))
s, j, text = chat([user("Say hello.")], max_tokens=3, stop=["zzz"])
check(s == 200 and j["choices"][0]["finish_reason"] == "length" and j["usage"]["completion_tokens"] == 3,
      "max_tokens ends with finish_reason length: %r" % j)


def metrics():
    d = request("GET", "/metrics")[2].decode()
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in d.splitlines() if l and not l.startswith("#")}


# one image sent in 6 requests over 4 slots: the vision tower ran once, the
# other slots took its rows from the engine's vision cache
m = metrics()
check(m["vlm_images_encoded_total"] == 1 and m["vlm_vision_cache_hits_total"] >= 1,
      "the image was encoded once: %r" % {k: v for k, v in m.items() if "image" in k or "vision" in k})
print("one image in 6 requests: encoded %d time(s), %d times from the vision cache" %
      (m["vlm_images_encoded_total"], m["vlm_vision_cache_hits_total"]))

# base64 with its padding and without, the last group carrying 1 or 2 bytes:
# a PPM whose last bytes are pixels, so a byte lost in decoding shows
for rest in (1, 2):
    w = next(w for w in range(20, 140) if (len(b"P6\n%d 17\n255\n" % w) + w * 17 * 3) % 3 == rest)
    ppm = b"P6\n%d 17\n255\n" % w + bytes((x * 37 + 11) % 256 for x in range(w * 17 * 3))
    path = os.path.join(os.environ.get("VLM_SERVE_DIR", "/tmp"), "pix_%d.ppm" % len(ppm))
    open(path, "wb").write(ppm)
    want = vlm_run("What is in the picture?", image=path)
    b64 = base64.b64encode(ppm).decode()
    for enc in (b64, b64.rstrip("=")):
        s, j, text = chat([user("What is in the picture?", "data:image/x-portable-pixmap;base64," + enc)])
        check(s == 200 and text == want, "a PPM of %d bytes as base64 of length %d: %r vs vlm run -i %r" % (len(ppm), len(enc), text, want))

# ------------------------------------------------------------------ side endpoints
s, h, d = request("GET", "/v1/models")
check(s == 200 and json.loads(d)["data"][0]["object"] == "model", "/v1/models lists the model")
s, h, d = request("GET", "/health", headers={})
check(s == 200 and json.loads(d)["status"] == "ok", "/health without a key")
s, h, d = request("GET", "/metrics")
metric_line = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+(Inf)?$')
lines = [l for l in d.decode().splitlines() if l and not l.startswith("#")]
check(s == 200 and h.get("Content-Type", "").startswith("text/plain") and all(metric_line.match(l) for l in lines),
      "/metrics is Prometheus text: %r" % [l for l in lines if not metric_line.match(l)][:3])


# ------------------------------------------------------------------ bad requests: a 4xx each, then still serving
png = open(IMAGE, "rb").read()
bad = [
    ("malformed JSON", None, b'{"messages": [', 400),
    ("not an object", None, b'[1, 2]', 400),
    ("missing messages", {"max_tokens": 3}, None, 400),
    ("messages not an array", {"messages": "hi"}, None, 400),
    ("wrong type: temperature", {"messages": [user("hi")], "temperature": "hot"}, None, 400),
    ("wrong type: max_tokens", {"messages": [user("hi")], "max_tokens": 2.5}, None, 400),
    ("wrong type: content", {"messages": [{"role": "user", "content": 7}]}, None, 400),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, None, 400),
    ("last message not the user's", {"messages": [user("hi"), {"role": "assistant", "content": "x"}]}, None, 400),
    ("bad base64", {"messages": [user("hi", "data:image/png;base64,@@@@")]}, None, 400),
    ("bytes that are no image", {"messages": [user("hi", "data:image/png;base64," + base64.b64encode(b"not an image at all").decode())]}, None, 400),
    ("truncated PNG", {"messages": [user("hi", "data:image/png;base64," + base64.b64encode(png[:200]).decode())]}, None, 400),
    ("a remote URL", {"messages": [user("hi", "https://example.com/cat.png")]}, None, 400),
    ("a local file without --allow-local-files", {"messages": [user("hi", "file://" + os.path.abspath(IMAGE))]}, None, 400),
    ("n=2", {"messages": [user("hi")], "n": 2}, None, 400),
    ("a prompt over the context", {"messages": [user("word " * 3000)]}, None, 400),
    ("body over the limit", None, b'{"messages": "' + b"x" * (2 << 20) + b'"}', 413),
]
for what, body, raw, want in bad:
    s, h, d = request("POST", "/v1/chat/completions", body, raw=raw)
    try:
        e = json.loads(d)["error"]
        shaped = isinstance(e["message"], str) and isinstance(e["type"], str) and "code" in e
    except Exception:
        shaped, e = False, d[:200]
    check(s == want and shaped, "%s: status %d (want %d), body %r" % (what, s, want, e))
    if what.startswith("last message"):
        check(shaped and "last message must be the user's" in e["message"], "the reason said: %r" % e)
    check(request("GET", "/health", headers={})[0] == 200, "serving after: " + what)
    print("%-42s -> %d %s" % (what, s, e["message"][:90] if shaped else e))
for what, headers in (("no API key", {}), ("a wrong API key", {"Authorization": "Bearer nope"}),
                      ("a key of another length", {"Authorization": "Bearer " + KEY + "x"}),
                      ("a prefix of the key", {"Authorization": "Bearer " + KEY[:3]}),
                      ("the key without Bearer", {"Authorization": KEY})):
    s, h, d = request("POST", "/v1/chat/completions", {"messages": [user("hi")]}, headers=headers)
    check(s == 401 and json.loads(d)["error"]["code"] == "invalid_api_key", "%s: %d" % (what, s))
    s, h, d = request("GET", "/v1/models", headers=headers)
    check(s == 401, "%s on /v1/models: %d" % (what, s))
s, h, d = request("GET", "/v1/nothing")
check(s == 404 and "error" in json.loads(d), "unknown path: 404")
s, h, d = request("GET", "/v1/chat/completions")
check(s == 405, "GET on the chat endpoint: %d" % s)


# ------------------------------------------------------------------ a client that hangs up mid-stream
def hang_up(messages, max_tokens):
    """Starts a streamed answer, reads its first event, closes the socket."""
    body = json.dumps({"messages": messages, "stream": True, "max_tokens": max_tokens, "temperature": 0}).encode()
    s = socket.create_connection(("127.0.0.1", PORT), timeout=60)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
              b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"data: " not in got:
        piece = s.recv(4096)
        if not piece:
            break
        got += piece
    s.close()
    return b"200 OK" in got


before = metrics().get("vlm_requests_cancelled_total", 0)
check(hang_up([user("Tell me a long story.")], 3000), "the long stream started")
for _ in range(200):
    m = metrics()
    if m.get("vlm_requests_cancelled_total", 0) > before and m["vlm_slots_busy"] == 0:
        break
    threading.Event().wait(0.05)
check(m.get("vlm_requests_cancelled_total", 0) > before and m["vlm_slots_busy"] == 0,
      "hanging up cancels the generation and frees the slot: %r" % {k: v for k, v in m.items() if "slots" in k or "cancel" in k})


# ------------------------------------------------------------------ load: 8 clients x 25 requests
def rss_kib():
    for l in open("/proc/%d/status" % PID):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
    return 0


kinds = [("text", [user("Say hello.")], want_text), ("image", [user("What is in the picture?", uri)], want_img),
         ("system", [{"role": "system", "content": "You are terse."}, user("Say hello.")], want_sys)]
errors = []


def client(k, rounds):
    for i in range(rounds):
        name, msgs, want = kinds[(k + i) % len(kinds)]
        mode = (k * 7 + i) % 4  # 0, 1: plain; 2: streamed; 3: hang up mid-stream
        try:
            if mode == 3:
                hang_up(msgs, 200)
                continue
            s, j, text = chat(msgs, stream=mode == 2)
            if s != 200 or text != want:
                errors.append("client %d request %d (%s, mode %d): %d %r, want %r" % (k, i, name, mode, s, text, want))
        except Exception as ex:
            errors.append("client %d request %d: %r" % (k, i, ex))


def load(rounds):
    ts = [threading.Thread(target=client, args=(k, rounds)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


load(25)  # the first round: every slot, path and allocator arena warm
rss_first = rss_kib()
load(25)
load(25)
for _ in range(200):  # hung-up generations end at their next token
    m = metrics()
    if m["vlm_slots_busy"] == 0 and m["vlm_queue_depth"] == 0:
        break
    threading.Event().wait(0.05)
rss_end = rss_kib()
check(not errors, "every finished request answered correctly: %d wrong, first %r" % (len(errors), errors[:3]))
check(m["vlm_slots_busy"] == 0 and m["vlm_queue_depth"] == 0, "no slot leaked: %r" % m)
print("load: 3 rounds of 8 clients x 25 requests, %d wrong; RSS %.1f MiB after the first round, %.1f MiB at the end; "
      "%d cancelled in all" % (len(errors), rss_first / 1024, rss_end / 1024, m.get("vlm_requests_cancelled_total", 0)))
if os.environ.get("VLM_SERVE_RSS", "1") == "1":
    check(rss_end <= rss_first * 1.10, "RSS within 10%% of after the first round: %d vs %d KiB" % (rss_end, rss_first))
print("%d failures" % len(failures))
sys.exit(1 if failures else 0)
