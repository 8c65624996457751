#!/usr/bin/env python3
"""Regenerates the Gemma 4 golden cases (tests/golden/gemma4, gemma4_moe)
with ../shared/golden/gen/gen_golden.py and one change: the buffers a fresh
model holds at identity values, and the generator's randomize leaves alone
(it only touches parameters), get values real checkpoints have: each
decoder layer's `layer_scalar` (1.0) one drawn from [0.5, 1.5), and the
vision tower's `std_bias` / `std_scale` (0 and 1: standardization a no-op,
which hid the scale of the patch pooling) N(0, 0.5) and [0.5, 1.5). Everything
else (seeds, shapes, image, ids, tolerances) is the shared generator's.
tests/data/tiny_gemma4 links to the case's checkpoint and follows it.
Needs torch and transformers 5.17 (pip). Run from the repository root:
    python3 tools/gen_golden_gemma4.py /work/shared OUTDIR
then copy OUTDIR/gemma4 and OUTDIR/gemma4_moe over tests/golden/."""
import importlib.util
import os
import sys


def load_generator(shared, out):
    """The shared generator as a module, writing to out."""
    sys.argv = ["gen_golden.py", out]  # the generator reads its arguments at import
    spec = importlib.util.spec_from_file_location("gen_golden", os.path.join(shared, "golden/gen/gen_golden.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def install(gen):
    """Makes gen's randomize give the buffers the values described above."""
    torch = gen.torch
    shared_randomize = gen.randomize

    def randomize(model, seed):
        shared_randomize(model, seed)
        g = torch.Generator().manual_seed(seed + 7)
        n = 0
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar") or name.endswith("std_scale"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
                n += 1
            elif name.endswith("std_bias"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.5)
        assert n > 0, "no layer_scalar buffers: the Gemma 4 model changed"

    gen.randomize = randomize


if __name__ == "__main__":
    gen = load_generator(sys.argv[1], sys.argv[2])
    install(gen)
    for i, (name, fn) in enumerate(gen.CASES):
        if name in ("gemma4", "gemma4_moe"):
            fn(gen.SEED * 100 + i + 1)
