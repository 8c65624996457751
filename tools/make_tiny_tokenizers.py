#!/usr/bin/env python3
"""Writes tests/data/tiny_<case>/ for the golden architectures other than
Qwen2.5-VL (see make_tiny_qwen_tokenizer.py for that one): model directories
the high-level API can open, made of the golden case's checkpoint (symlinked),
its config, the case's image-processor settings, the family's real chat
template and a 1024-id tokenizer built from the family's real tokenizer (its
byte symbols, its first merges whose parts are already in the vocabulary, its
pre-tokenizer / normalizer / decoder) with the special tokens at the ids the
golden config and case.json use. Run from the repository root:
    python3 tools/make_tiny_tokenizers.py /work/shared
"""
import gzip, json, os, sys

shared = sys.argv[1] if len(sys.argv) > 1 else "../shared"
N_VOCAB = 1024


def load_tok(name):
    return json.load(gzip.open(os.path.join(shared, "tokenizers", name, "tokenizer.json.gz")))


def bytes_to_unicode():
    """GPT-2's byte -> printable symbol map (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def build_vocab(real, specials, base):
    """base: symbols in id order (from id len(...) of free ids). Fills every id
    that is not a special with base symbols, then merges of the real model
    whose parts are already there. Returns vocab, merges."""
    free = [i for i in range(N_VOCAB) if i not in specials]
    vocab, merges = {}, []
    for sym in base:
        vocab[sym] = free[len(vocab)]
    for m in real["model"]["merges"]:
        if len(vocab) >= len(free):
            break
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in vocab and b in vocab and a + b not in vocab:
            vocab[a + b] = free[len(vocab)]
            merges.append([a, b])
    assert len(vocab) == len(free), (len(vocab), len(free))
    return vocab, merges


def write_dir(case, out, real, specials, base, tok_cfg, template=None, template_file=None, gen_eos=None,
              proc_name="preprocessor_config.json", proc=None):
    os.makedirs(out, exist_ok=True)
    vocab, merges = build_vocab(real, specials, base)
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in sorted(specials.items())]
    model = {k: v for k, v in real["model"].items() if k not in ("vocab", "merges")}
    model.update(vocab=vocab, merges=merges)
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
           "normalizer": real["normalizer"], "pre_tokenizer": real["pre_tokenizer"],
           "post_processor": real["post_processor"], "decoder": real["decoder"], "model": model}
    pp = real.get("post_processor")
    if pp and pp.get("type") == "TemplateProcessing":  # special token ids follow the tiny vocabulary
        for name, st in pp["special_tokens"].items():
            st["ids"] = [next(i for i, s in specials.items() if s == t) for t in st["tokens"]]
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
    cfg = dict(tok_cfg)
    if template is not None:
        cfg["chat_template"] = template
    cfg["added_tokens_decoder"] = {str(a["id"]): a for a in added}
    json.dump(cfg, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=1, ensure_ascii=False)
    if template_file:
        open(os.path.join(out, "chat_template.jinja"), "w").write(template_file)
    gdir = os.path.join("tests/golden", case)
    meta = json.load(open(os.path.join(gdir, "case.json")))
    json.dump(proc if proc is not None else meta["image_processor"], open(os.path.join(out, proc_name), "w"), indent=1)
    json.dump(json.load(open(os.path.join(gdir, "model/config.json"))), open(os.path.join(out, "config.json"), "w"), indent=1)
    json.dump({"eos_token_id": gen_eos}, open(os.path.join(out, "generation_config.json"), "w"))
    link = os.path.join(out, "model.safetensors")
    if not os.path.lexists(link):
        os.symlink("../../golden/%s/model/model.safetensors" % case, link)
    print("wrote", out, "vocab", len(vocab) + len(specials), "merges", len(merges))


def byte_symbols_by_value():
    m = bytes_to_unicode()
    return [m[b] for b in range(256)]  # "\n" (Ċ) gets id 10 when the first ids are free


# ---------------------------------------------------------------- Idefics3 / SmolVLM
def idefics3():
    real = load_tok("smolvlm")
    meta = json.load(open("tests/golden/idefics3/case.json"))
    st = meta["special_tokens"]
    specials = {st["<image>"]: "<image>", st["<fake_token_around_image>"]: "<fake_token_around_image>",
                st["<global-img>"]: "<global-img>", 996: "<|endoftext|>", 997: "<|im_start|>", 998: "<|im_end|>",
                999: "<end_of_utterance>"}
    for r in range(1, 7):
        for c in range(1, 7):
            specials[960 + 6 * (r - 1) + (c - 1)] = "<row_%d_col_%d>" % (r, c)
    base = byte_symbols_by_value()
    assert base[st["\n"]] == "Ċ"
    tmpl = json.load(open(os.path.join(shared, "configs/SmolVLM-256M-Instruct/chat_template.json")))["chat_template"]
    real_cfg = json.load(open(os.path.join(shared, "tokenizers/smolvlm/tokenizer_config.json")))
    cfg = {k: real_cfg[k] for k in ("add_prefix_space", "bos_token", "eos_token", "pad_token", "unk_token",
                                    "clean_up_tokenization_spaces", "legacy")}
    write_dir("idefics3", "tests/data/tiny_idefics3", real, specials, base, cfg, template=tmpl,
              gen_eos=[999, 996])
    proc = json.load(open(os.path.join(shared, "configs/SmolVLM-256M-Instruct/processor_config.json")))
    proc["image_seq_len"] = meta["image_seq_len"]
    json.dump(proc, open("tests/data/tiny_idefics3/processor_config.json", "w"), indent=1)


# ---------------------------------------------------------------- InternVL (Qwen2 / Qwen3 text)
# The chat template of the transformers-format InternVL3 checkpoints
# (OpenGVLab/InternVL3-*-hf, as written by transformers' InternVL converter).
INTERNVL_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}"
    "{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\n' }}"
    "{% endif %}")


def internvl(case, template=INTERNVL_TEMPLATE):
    real = load_tok("qwen3")
    meta = json.load(open("tests/golden/%s/case.json" % case))
    st = meta["special_tokens"]
    specials = {996: "<|endoftext|>", 997: "<|im_start|>", 998: "<|im_end|>", 999: "<video>"}
    for k, v in st.items():
        specials[v] = k
    base = [t for t, i in sorted(real["model"]["vocab"].items(), key=lambda kv: kv[1])[:256]]
    cfg = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
           "add_eos_token": False, "clean_up_tokenization_spaces": False}
    write_dir(case, "tests/data/tiny_" + case, real, specials, base, cfg, template=template, gen_eos=[998, 996])
    if os.path.exists("tests/golden/%s/model/added_tokens.json" % case):  # original format: the model reads it
        # and its preprocessor_config.json is InternVL3's CLIP one, which its own code (and vlm) ignores
        awq = json.load(open(os.path.join(shared, "configs/InternVL3-2B-AWQ/preprocessor_config.json")))
        json.dump(awq, open("tests/data/tiny_%s/preprocessor_config.json" % case, "w"), indent=1)
        json.dump({v: k for k, v in sorted(specials.items())},
                  open("tests/data/tiny_%s/added_tokens.json" % case, "w"), indent=1)


# ---------------------------------------------------------------- Qwen3-VL
def qwen3_vl():
    real = load_tok("qwen3")
    mc = json.load(open("tests/golden/qwen3_vl/model/config.json"))
    specials = {996: "<|endoftext|>", 997: "<|im_start|>", 998: "<|im_end|>", 999: "<|vision_pad|>",
                mc["image_token_id"]: "<|image_pad|>", mc["video_token_id"]: "<|video_pad|>",
                mc["vision_start_token_id"]: "<|vision_start|>", mc["vision_end_token_id"]: "<|vision_end|>"}
    base = [t for t, i in sorted(real["model"]["vocab"].items(), key=lambda kv: kv[1])[:256]]
    tmpl = json.load(open(os.path.join(shared, "configs/Qwen3-VL-4B-Instruct/chat_template.json")))["chat_template"]
    cfg = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
           "add_eos_token": False, "clean_up_tokenization_spaces": False}
    write_dir("qwen3_vl", "tests/data/tiny_qwen3_vl", real, specials, base, cfg, template=tmpl, gen_eos=[998, 996])


# ---------------------------------------------------------------- Gemma 4
def gemma4():
    real = load_tok("gemma3")
    mc = json.load(open("tests/golden/gemma4/model/config.json"))
    specials = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>",
                mc["image_token_id"]: "<|image|>", mc["boi_token_id"]: "<|image>", mc["eoi_token_id"]: "<image|>",
                mc["video_token_id"]: "<|video|>", mc["audio_token_id"]: "<|audio|>", mc["boa_token_id"]: "<|audio>",
                mc["eoa_token_index"]: "<audio|>"}
    for k, s in enumerate(["<|turn>", "<turn|>", "<|think|>", "<|channel>", "<channel|>", "<|tool>", "<tool|>",
                           "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>']):
        specials[5 + k] = s
    # byte fallback tokens, then the printable ASCII characters and the SentencePiece space
    base = ["<0x%02X>" % b for b in range(256)] + [chr(c) for c in range(33, 127)] + ["▁", "\n"]
    real_cfg = json.load(open(os.path.join(shared, "tokenizers/gemma3/tokenizer_config.json")))
    cfg = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
           "add_bos_token": real_cfg.get("add_bos_token", True), "add_eos_token": False,
           "clean_up_tokenization_spaces": False}
    tmpl = open(os.path.join(shared, "configs/gemma-4-E2B-it/chat_template.jinja")).read()
    meta = json.load(open("tests/golden/gemma4/case.json"))
    proc = json.load(open(os.path.join(shared, "configs/gemma-4-E2B-it/processor_config.json")))
    proc = {"image_processor": meta["image_processor"], "processor_class": proc["processor_class"],
            "image_seq_length": meta["image_processor"]["max_soft_tokens"]}
    write_dir("gemma4", "tests/data/tiny_gemma4", real, specials, base, cfg, template_file=tmpl,
              gen_eos=[1, 6], proc_name="processor_config.json", proc=proc)


if __name__ == "__main__":
    idefics3()
    internvl("internvl")
    internvl("internvl_qwen3")
    # original-format InternVL (InternVLChatModel): the text-only ChatML template of its tokenizer_config.json
    awq = json.load(open(os.path.join(shared, "configs/InternVL3-2B-AWQ/tokenizer_config.json")))
    internvl("internvl_orig", awq["chat_template"])
    qwen3_vl()
    gemma4()
