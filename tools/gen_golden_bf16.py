#!/usr/bin/env python3
"""References for the bf16 compute mode: each golden case of
tests/golden/ run by transformers again, with one change: every matrix
product of a weight (F.linear, F.conv2d, F.conv3d; MoE experts in their
eager per-expert F.linear form) multiplies its input and its weight rounded
to bf16 (ties to even) and sums in f32, as vlm's bf16 mode does; attention,
norms, RoPE and everything else stay f32. The generator
(../shared/golden/gen/gen_golden.py, with tools/gen_golden_gemma4.py's
buffers for the Gemma 4 cases) rebuilds the same models from the same seeds;
this script checks that each rebuilt checkpoint is byte for byte the one in
tests/golden/CASE/model and, run on the committed inputs without the
change, reproduces the committed logits; then it writes tests/golden/CASE/expected_bf16.safetensors
(logits, vision_embeds, generated_ids; the inputs are unchanged). Cases the generator
does not make (the *_orig layouts of InternVL) share their model's file.
Needs torch and transformers 5.17 (pip). From the repository root:
    python3 tools/gen_golden_bf16.py /work/shared"""
import filecmp
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden_gemma4  # noqa: E402

shared = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="golden_bf16_")
gen = gen_golden_gemma4.load_generator(shared, tmp)
torch = gen.torch
F = torch.nn.functional
from safetensors.torch import load_file, save_file  # noqa: E402

# Each case runs on the committed inputs (a fresh run of the processors may
# differ with library versions), replaced in the dict its feature function
# also reads.
make_case = gen.run_case


def run_case(name, model, img_kwargs, ids, *rest, **kw):
    committed = load_file(os.path.join("tests/golden", name, "inputs.safetensors"))
    for k in img_kwargs:
        if k in committed:
            img_kwargs[k] = committed[k]
    return make_case(name, model, img_kwargs, committed["input_ids"].tolist(), *rest, **kw)


gen.run_case = run_case
plain_randomize = gen.randomize
gen_golden_gemma4.install(gen)
gemma_randomize = gen.randomize


def run_all(check):
    for i, (name, fn) in enumerate(gen.CASES):
        gen.randomize = gemma_randomize if name.startswith("gemma4") else plain_randomize
        fn(gen.SEED * 100 + i + 1)
        got, mine = os.path.join(tmp, name), os.path.join("tests/golden", name)
        if not filecmp.cmp(os.path.join(got, "model/model.safetensors"), os.path.join(mine, "model/model.safetensors"),
                           shallow=False):
            sys.exit("%s: the rebuilt checkpoint differs from tests/golden/%s/model" % (name, name))
        exp = load_file(os.path.join(got, "expected.safetensors"))
        if check:  # unpatched: transformers here must reproduce the committed reference
            ref = load_file(os.path.join(mine, "expected.safetensors"))
            d = (exp["logits"] - ref["logits"]).abs().max().item()
            if d > 1e-4:
                sys.exit("%s: transformers here gives logits %.3g off the committed reference" % (name, d))
            continue
        out = {k: v for k, v in exp.items() if k in ("logits", "vision_embeds", "generated_ids")}
        save_file(out, os.path.join(mine, "expected_bf16.safetensors"))
        orig = os.path.join("tests/golden", name + "_orig")
        if os.path.isdir(orig):
            shutil.copy(os.path.join(mine, "expected_bf16.safetensors"), orig)
        print("bf16 reference", name)


run_all(True)


def bf16(t):
    return t.to(torch.bfloat16).to(t.dtype) if t is not None and t.is_floating_point() else t


linear, conv2d, conv3d = F.linear, F.conv2d, F.conv3d
F.linear = lambda x, w, b=None: linear(bf16(x), bf16(w), b)
F.conv2d = lambda x, w, b=None, *a, **k: conv2d(bf16(x), bf16(w), b, *a, **k)
F.conv3d = lambda x, w, b=None, *a, **k: conv3d(bf16(x), bf16(w), b, *a, **k)
# MoE experts: the eager per-expert loop (F.linear), not a fused kernel
import transformers.integrations.moe as moe  # noqa: E402
moe.ALL_EXPERTS_FUNCTIONS.get_interface = lambda impl, default: default
run_all(False)
shutil.rmtree(tmp)
