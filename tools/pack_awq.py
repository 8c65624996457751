#!/usr/bin/env python3
"""Tiny AWQ checkpoints from golden cases, with their reference.

For each case below, the text decoder's linears of tests/golden/CASE/model
are quantized as AutoAWQ does (4 bits, asymmetric, groups of GROUP inputs:
scale = (max - min) / 15, zero = round(-min / scale), q = round(w / scale)
+ zero, clamped to 0..15; scales stored as f16) and written in AutoAWQ's
GEMM layout, the one the Hub's "awq" checkpoints use: qweight int32
[in, out/8] and qzeros int32 [in/GROUP, out/8] with 8 values per word in
AutoAWQ's order (outputs 0, 2, 4, 6, 1, 3, 5, 7 in nibbles 0..7), scales
f16 [in/GROUP, out]; config.json gains AutoAWQ's quantization_config. One
text module is listed in modules_to_not_convert and stays as stored, as do
the vision tower, the projector, the embeddings and lm_head.

The reference (expected.safetensors) is transformers run on the same model
with those linears replaced by their dequantized values in f32,
scale * (q - zero), on the case's committed inputs: logits and 12 greedy
tokens; the vision embeddings are the case's own (the vision tower is not
quantized). The packing is checked against an unpacking written from
transformers' and vLLM's AWQ code (shifts 0, 4, ..., 28, then the reverse
order 0, 4, 1, 5, 2, 6, 3, 7) before anything is written.

With --random CONFIG_DIR OUT_DIR it writes instead a made-up AWQ
checkpoint of a real model's shapes for benchmarks (vlm bench -m OUT_DIR):
the text decoder's linears as random AWQ words (codes and zero points
uniform in 0..15, scales around 2e-3), every other tensor random bf16, the
config with AutoAWQ's quantization_config (group 128, the vision tower left
unconverted), as the Hub's Qwen2.5-VL-*-Instruct-AWQ are.

Needs torch and transformers 5.17 (pip). From the repository root:
    python3 tools/pack_awq.py            # writes tests/awq/CASE/
    python3 tools/pack_awq.py --random ../shared/configs/Qwen2.5-VL-3B-Instruct /tmp/q3b-awq
"""
import json
import os
import re
import shutil
import sys

import torch
import transformers as T
from safetensors.torch import load_file, save_file

GROUP = 64
ORDER = [0, 2, 4, 6, 1, 3, 5, 7]          # AutoAWQ's pack: nibble i holds output ORDER[i]
REVERSE = [0, 4, 1, 5, 2, 6, 3, 7]        # its inverse, as the unpacking code has it
# case -> (the case whose transformers model gives the reference, modules left
# unquantized). InternVL's AWQ checkpoints on the Hub are in its original
# layout; transformers runs the same weights in its own (tests/golden/internvl).
CASES = {
    "qwen2_5_vl": ("qwen2_5_vl", ["visual", "layers.1.mlp.down_proj"]),
    "internvl_orig": ("internvl", ["vision_model", "mlp1", "layers.1.mlp.down_proj"]),
}
TEXT_LINEAR = re.compile(r"layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")


def is_awq_module(name, skip):
    module = name[: -len(".weight")]
    vision = any(v in name for v in ("visual", "vision", "mlp1", "multi_modal_projector"))
    return bool(TEXT_LINEAR.search(name)) and not vision and not any(s in module for s in skip)


def quantize(w):
    """w [out, in] -> codes [in, out], zeros [in/G, out], f16 scales [in/G, out]."""
    wt = w.t().contiguous().double()                       # [in, out]
    g = wt.reshape(-1, GROUP, wt.shape[1])                 # [in/G, G, out]
    mx, mn = g.amax(dim=1), g.amin(dim=1)
    scales = ((mx - mn).clamp(min=1e-5) / 15)
    zeros = (-torch.round(mn / scales)).clamp(0, 15)
    codes = (torch.round(g / scales[:, None, :]) + zeros[:, None, :]).clamp(0, 15)
    return codes.reshape(wt.shape).to(torch.int64), zeros.to(torch.int64), scales.to(torch.float16)


def dequantize(codes, zeros, scales):
    z = zeros.repeat_interleave(GROUP, dim=0)
    s = scales.float().repeat_interleave(GROUP, dim=0)
    return ((codes - z).float() * s).t().contiguous()      # [out, in], exact in f32


def pack(v):
    """[rows, N] values 0..15 -> [rows, N/8] int32, AutoAWQ's nibble order."""
    rows, n = v.shape
    out = torch.zeros(rows, n // 8, dtype=torch.int64)
    for i in range(8):
        out |= v[:, ORDER[i]::8] << (4 * i)
    return out.to(torch.int32)   # wraps to the stored signed value, as torch's int32 would


def unpack(q):
    """transformers / vLLM: shift out the 8 nibbles, then reorder."""
    shifts = torch.arange(0, 32, 4)
    v = (q.to(torch.int64)[:, :, None] >> shifts[None, None, :]) & 15
    v = v.reshape(q.shape[0], -1)
    order = torch.arange(v.shape[1]).reshape(-1, 8)[:, REVERSE].reshape(-1)
    return v[:, order]


def awq_tensors(name, w):
    codes, zeros, scales = quantize(w)
    qweight, qzeros = pack(codes), pack(zeros)
    assert torch.equal(unpack(qweight), codes) and torch.equal(unpack(qzeros), zeros), name
    module = name[: -len(".weight")]
    return {module + ".qweight": qweight, module + ".qzeros": qzeros, module + ".scales": scales}, \
        dequantize(codes, zeros, scales)


def reference(case, deq):
    """transformers on CASE's model with the dequantized linears."""
    src = os.path.join("tests/golden", case)
    cfg = json.load(open(os.path.join(src, "model/config.json")))
    cls = getattr(T, cfg["architectures"][0])
    model = cls.from_pretrained(os.path.join(src, "model"), dtype=torch.float32).eval()
    sd = load_file(os.path.join(src, "model/model.safetensors"))
    with torch.no_grad():
        n = 0
        for key, p in model.state_dict().items():  # the in-memory names differ from the stored ones
            for stored, w in deq.items():
                if stored in sd and torch.equal(sd[stored], p):
                    p.copy_(w)
                    n += 1
                    break
        assert n == len(deq), "%s: %d of %d linears found in the model" % (case, n, len(deq))
        inputs = load_file(os.path.join(src, "inputs.safetensors"))
        ids = inputs.pop("input_ids")[None]
        out = model(input_ids=ids, **inputs)
        gen = model.generate(input_ids=ids, **inputs, max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    expected = load_file(os.path.join(src, "expected.safetensors"))
    res = {"logits": out.logits[0].float().contiguous(), "generated_ids": gen[0, ids.shape[1]:].to(torch.int64)}
    if "vision_embeds" in expected:
        res["vision_embeds"] = expected["vision_embeds"]
    return res


def main():
    refs = {}
    for case, (ref_case, skip) in CASES.items():
        src = os.path.join("tests/golden", case)
        sd = load_file(os.path.join(src, "model/model.safetensors"))
        out, deq = {}, {}
        for name, t in sd.items():
            if name.endswith(".weight") and t.dim() == 2 and is_awq_module(name, skip):
                parts, deq[name] = awq_tensors(name, t)
                out.update(parts)
            else:
                out[name] = t
        assert any(s in n for n in sd for s in skip[-1:]), "the unconverted text module is missing"
        if ref_case not in refs:
            refs[ref_case] = (reference(ref_case, deq), deq)
        expected, ref_deq = refs[ref_case]
        for name, w in deq.items():  # the same text weights as the reference model's
            assert torch.equal(w, ref_deq[name]), "%s: %s differs from %s's" % (case, name, ref_case)
        dst = os.path.join("tests/awq", case)
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(os.path.join(dst, "model"))
        for f in os.listdir(os.path.join(src, "model")):
            if f != "model.safetensors" and f != "config.json":
                shutil.copy(os.path.join(src, "model", f), os.path.join(dst, "model", f))
        cfg = json.load(open(os.path.join(src, "model/config.json")))
        cfg["quantization_config"] = {"bits": 4, "group_size": GROUP, "modules_to_not_convert": skip,
                                      "quant_method": "awq", "version": "gemm", "zero_point": True}
        json.dump(cfg, open(os.path.join(dst, "model/config.json"), "w"), indent=1)
        save_file(out, os.path.join(dst, "model/model.safetensors"), metadata={"format": "pt"})
        shutil.copy(os.path.join(src, "inputs.safetensors"), dst)
        save_file(expected, os.path.join(dst, "expected.safetensors"))
        meta = json.load(open(os.path.join(src, "case.json")))
        meta.update(case=case + "_awq", generated_ids=expected["generated_ids"].tolist(),
                    awq={"group_size": GROUP, "linears": len(deq), "modules_to_not_convert": skip,
                         "reference": "transformers on tests/golden/%s with the linears dequantized in f32" % ref_case})
        json.dump(meta, open(os.path.join(dst, "case.json"), "w"), indent=1)
        print("AWQ", case, "linears", len(deq), "tensors", len(out), "gen", expected["generated_ids"].tolist())


def random_checkpoint(cfg_dir, out_dir, group=128):
    cfg = json.load(open(os.path.join(cfg_dir, "config.json")))
    conf = T.AutoConfig.from_pretrained(cfg_dir)
    with torch.device("meta"):
        model = getattr(T, cfg["architectures"][0])._from_config(conf)
    g = torch.Generator().manual_seed(0)
    sd, n_awq = {}, 0
    for name, p in model.state_dict().items():
        if name.endswith(".weight") and p.dim() == 2 and is_awq_module(name, ["visual"]):
            out, k = p.shape
            module = name[: -len(".weight")]
            sd[module + ".qweight"] = torch.randint(-2**31, 2**31, (k, out // 8), dtype=torch.int32, generator=g)
            sd[module + ".qzeros"] = torch.randint(-2**31, 2**31, (k // group, out // 8), dtype=torch.int32, generator=g)
            sd[module + ".scales"] = (0.001 + 0.002 * torch.rand(k // group, out, generator=g)).half()
            n_awq += 1
        else:
            sd[name] = (torch.randn(p.shape, generator=g) * 0.02).to(torch.bfloat16)
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(cfg_dir):
        if f.endswith(".json") and f != "config.json":
            shutil.copy(os.path.join(cfg_dir, f), out_dir)
    cfg["quantization_config"] = {"bits": 4, "group_size": group, "modules_to_not_convert": ["visual"],
                                  "quant_method": "awq", "version": "gemm", "zero_point": True}
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"), indent=1)
    save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    print("made-up AWQ checkpoint", out_dir, "linears", n_awq, "tensors", len(sd))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--random":
        sys.exit(random_checkpoint(sys.argv[2], sys.argv[3]))
    sys.exit(main())
