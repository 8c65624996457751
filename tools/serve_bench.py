"""Figures for vlm serve (README "Serving"): aggregate decode speed with 1, 2
and 4 concurrent streams, time to first token for an image sent again with
and without the vision cache, and for a follow-up turn with and without the
slot's cached prefix. Starts its own servers (random weights of a model
folder's config.json: vlm serve --random) and prints one JSON line per
figure. Python's standard library only.

  python3 tools/serve_bench.py VLM MODEL_DIR [--threads 2] [--tokens 64] [--image 448]
"""
import argparse
import base64
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
import http.client


def png(w, h, seed):
    rows = b"".join(b"\0" + bytes((x * 7 + y * 13 + seed * 31) % 251 for x in range(w * 3)) for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def start(vlm, model, *extra):
    log = open("/tmp/serve_bench_%d.log" % os.getpid(), "w+")
    p = subprocess.Popen([vlm, "serve", "-m", model, "--random", "--port", "0", *extra], stderr=log)
    for _ in range(6000):
        log.seek(0)
        text = log.read()
        if "loaded in" in text:
            port = int(text.split("127.0.0.1:")[1].split()[0])
            return p, port
        if p.poll() is not None:
            sys.exit("the server did not start:\n" + text)
        time.sleep(0.05)
    sys.exit("the server did not start in time")


def stream(port, messages, max_tokens, out):
    """One streamed request: out gets (ttft, decode tokens, decode seconds)."""
    t0 = time.time()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    c.request("POST", "/v1/chat/completions", json.dumps({"messages": messages, "stream": True, "max_tokens": max_tokens,
              "temperature": 0, "ignore_eos": True, "stream_options": {"include_usage": True}}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    first = last = None
    n = 0
    buf = b""
    while True:
        piece = r.read1(65536)
        if not piece:
            break
        buf += piece
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if not ev.startswith(b"data: {"):
                continue
            j = json.loads(ev[6:])
            if "usage" in j:
                n = j["usage"]["completion_tokens"]
            if j["choices"] and j["choices"][0]["delta"].get("content"):
                now = time.time()
                first = first or now
                last = now
    out.append((first - t0, n, last - first))


def decode_streams(port, k, tokens):
    out = []
    msgs = [[{"role": "user", "content": "Write about topic %d." % i}] for i in range(k)]
    ts = [threading.Thread(target=stream, args=(port, msgs[i], tokens, out)) for i in range(k)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(n - 1 for _, n, _ in out) / max(max(d for _, _, d in out), 1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vlm")
    ap.add_argument("model")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--image", type=int, default=448)
    a = ap.parse_args()
    name = os.path.basename(a.model.rstrip("/"))
    p, port = start(a.vlm, a.model, "-t", a.threads, "--parallel", "4")
    one = None
    for k in (1, 2, 4):
        tps = decode_streams(port, k, a.tokens)
        one = one or tps
        print(json.dumps({"model": name, "figure": "decode_streams", "streams": k, "tok_s": round(tps, 2),
                          "vs_one": round(tps / one, 2)}), flush=True)
    p.terminate()
    p.wait()
    uri = "data:image/png;base64," + base64.b64encode(png(a.image, a.image, 1)).decode()

    def image_turn(system, follow=None):
        m = [{"role": "system", "content": system},
             {"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}},
                                          {"type": "text", "text": "Describe it."}]}]
        if follow:
            m += [{"role": "assistant", "content": follow}, {"role": "user", "content": "And the colours?"}]
        out = []
        stream(port, m, 4, out)
        return out[0][0]
    for mib in ("256", "0"):  # the same image in a new conversation: cached rows or the tower again
        p, port = start(a.vlm, a.model, "-t", a.threads, "--parallel", "1", "--vision-cache-mib", mib)
        cold = image_turn("You are helpful.")
        image_turn("Be brief.")  # takes the slot: the next cannot reuse its prefix
        again = image_turn("You are helpful, truly.")
        print(json.dumps({"model": name, "figure": "ttft_repeated_image", "image": a.image, "vision_cache_mib": int(mib),
                          "first_s": round(cold, 3), "again_s": round(again, 3)}), flush=True)
        p.terminate()
        p.wait()
    # a follow-up turn: on the slot that holds the conversation, or after another took it
    p, port = start(a.vlm, a.model, "-t", a.threads, "--parallel", "1", "--vision-cache-mib", "0")
    image_turn("You are helpful.")
    reuse = image_turn("You are helpful.", follow="A picture.")
    image_turn("Be brief.")
    image_turn("Be brief.")
    anew = image_turn("You are helpful.", follow="A picture.")
    print(json.dumps({"model": name, "figure": "ttft_follow_up", "image": a.image, "with_prefix_reuse_s": round(reuse, 3),
                      "without_s": round(anew, 3)}), flush=True)
    p.terminate()
    p.wait()


if __name__ == "__main__":
    main()
