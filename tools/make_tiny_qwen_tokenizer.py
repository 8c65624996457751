#!/usr/bin/env python3
"""Writes tests/data/tiny_qwen/: a Qwen2.5-VL model directory for the API tests.

The golden qwen2_5_vl checkpoint has a 1024-token vocabulary with the image
placeholders at 1000-1003, so the real Qwen tokenizer cannot drive it. This
builds a byte-level BPE tokenizer of exactly 1024 ids from the real Qwen3
tokenizer: its 256 byte tokens, then its first merges whose parts are already
in the vocabulary, and the chat special tokens at the ids the checkpoint's
config uses. Pre-tokenizer, normalizer and decoder are the real ones, and the
chat template is Qwen2.5-VL-3B's. Run from the repository root:
    python3 tools/make_tiny_qwen_tokenizer.py /work/shared
"""
import gzip, json, os, sys

shared = sys.argv[1] if len(sys.argv) > 1 else "../shared"
out = "tests/data/tiny_qwen"
os.makedirs(out, exist_ok=True)
real = json.load(gzip.open(os.path.join(shared, "tokenizers/qwen3/tokenizer.json.gz")))
case = os.path.join("tests/golden/qwen2_5_vl")
cfg = json.load(open(os.path.join(case, "model/config.json")))

specials = {996: "<|endoftext|>", 997: "<|im_start|>", 998: "<|im_end|>", 999: "<|vision_pad|>",
            cfg["image_token_id"]: "<|image_pad|>", cfg["video_token_id"]: "<|video_pad|>",
            cfg["vision_start_token_id"]: "<|vision_start|>", cfg["vision_end_token_id"]: "<|vision_end|>"}
n_regular = 996
rv = real["model"]["vocab"]
by_id = sorted(rv.items(), key=lambda kv: kv[1])
vocab = {tok: i for tok, i in by_id[:256]}  # the 256 byte-level symbols come first
merges = []
for a, b in real["model"]["merges"]:
    if len(vocab) >= n_regular:
        break
    if a in vocab and b in vocab and a + b not in vocab:
        vocab[a + b] = len(vocab)
        merges.append([a, b])
# Ids above the specials (1004-1023) are further merges so that every id decodes.
extra = []
for a, b in real["model"]["merges"][len(merges):]:
    if len(extra) >= 1024 - 1004:
        break
    if a in vocab and b in vocab and a + b not in vocab:
        extra.append((a, b))
for k, (a, b) in enumerate(extra):
    vocab[a + b] = 1004 + k
    merges.append([a, b])

added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
          "normalized": False, "special": True} for i, s in sorted(specials.items())]
tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
       "normalizer": real["normalizer"], "pre_tokenizer": real["pre_tokenizer"],
       "post_processor": real["post_processor"], "decoder": real["decoder"],
       "model": dict({k: v for k, v in real["model"].items() if k not in ("vocab", "merges")},
                     vocab=vocab, merges=merges)}
json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
tmpl = json.load(open(os.path.join(shared, "configs/Qwen2.5-VL-3B-Instruct/chat_template.json")))["chat_template"]
json.dump({"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
           "add_bos_token": False, "chat_template": tmpl,
           "added_tokens_decoder": {str(a["id"]): a for a in added}},
          open(os.path.join(out, "tokenizer_config.json"), "w"), indent=1)
meta = json.load(open(os.path.join(case, "case.json")))
json.dump(meta["image_processor"], open(os.path.join(out, "preprocessor_config.json"), "w"), indent=1)
cfg_out = dict(cfg)
json.dump(cfg_out, open(os.path.join(out, "config.json"), "w"), indent=1)
json.dump({"eos_token_id": [998, 996]}, open(os.path.join(out, "generation_config.json"), "w"))
link = os.path.join(out, "model.safetensors")
if not os.path.lexists(link):
    os.symlink("../../golden/qwen2_5_vl/model/model.safetensors", link)
print("wrote", out, "vocab", len(vocab) + len(specials), "merges", len(merges))
