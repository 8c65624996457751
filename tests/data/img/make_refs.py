# Writes the trimmed references the image tests use, from the full HF outputs in
# /work/shared/golden/preprocess.tar.gz (unpacked to SRC):
#   python3 tests/data/img/make_refs.py SRC/preprocess tests/data/img
# Per (family, image): pixel_values subsampled with a prime stride from both
# backends (pil, torchvision), every integer output in full, and Idefics3's
# pixel_attention_mask as the (height, width) of its valid rectangle per frame
# (checked here to be exactly a top-left rectangle of ones).
import json, struct, sys, os

SRC, DST = sys.argv[1], sys.argv[2]
NSAMP = 16384
DT = {'F16': ('e', 2), 'F32': ('f', 4), 'I64': ('q', 8), 'I32': ('i', 4), 'BOOL': ('?', 1)}

def read(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n]); base = 8 + n
    out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']; f, sz = DT[v['dtype']]
        out[k] = (v['dtype'], v['shape'], b[base + s:base + e])
    return out

def vals(t):
    dt, sh, raw = t; f, sz = DT[dt]
    return struct.unpack('<%d%s' % (len(raw) // sz, f), raw)

def write(path, tensors):
    hdr, blobs, off = {}, [], 0
    # widest dtypes first, so every tensor stays aligned to its element size
    for name, (dt, shape, raw) in sorted(tensors.items(), key=lambda kv: -DT[kv[1][0]][1]):
        hdr[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw); off += len(raw)
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h)
        for r in blobs: f.write(r)

def is_prime(n):
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))

def i64(shape, values):
    return ('I64', list(shape), struct.pack('<%dq' % len(values), *values))

for arch in ('qwen2_5_vl', 'qwen3_vl', 'internvl', 'idefics3', 'gemma4'):
    for i in range(3):
        pil = read(os.path.join(SRC, f'{arch}.pil.{i}.safetensors'))
        tv = read(os.path.join(SRC, f'{arch}.torchvision.{i}.safetensors'))
        out = {}
        dt, shape, raw = pil['pixel_values']
        assert tv['pixel_values'][1] == shape, (arch, i)
        n = len(raw) // 2
        s = max(1, n // NSAMP)
        while not is_prime(s) and s > 1: s += 1
        idx = range(0, n, s)
        for tag, src in (('pil', pil), ('tv', tv)):
            r = src['pixel_values'][2]
            out[tag + '.pixel_values'] = ('F16', [len(idx)], b''.join(r[2 * j:2 * j + 2] for j in idx))
        out['pixel_values.shape'] = i64([len(shape)], shape)
        out['pixel_values.stride'] = i64([1], [s])
        for k in sorted(pil):
            if k == 'pixel_values': continue
            a, b = vals(pil[k]), vals(tv[k])
            assert [int(x) for x in a] == [int(x) for x in b], (arch, i, k)
            if k == 'pixel_attention_mask':
                sh = pil[k][1]; H, W = sh[-2], sh[-1]; nf = len(a) // (H * W)
                rect = []
                for f in range(nf):
                    m = a[f * H * W:(f + 1) * H * W]
                    hh = sum(1 for y in range(H) if m[y * W])
                    ww = sum(1 for x in range(W) if m[x])
                    assert all(m[y * W + x] == (1 if (y < hh and x < ww) else 0) for y in range(H) for x in range(W))
                    rect += [hh, ww]
                out['pixel_attention_mask.rect'] = i64([nf, 2], rect)
                out['pixel_attention_mask.shape'] = i64([len(sh)], sh)
            else:
                out[k] = i64(pil[k][1], [int(x) for x in a])
        write(os.path.join(DST, f'ref_{arch}_{i}.safetensors'), out)
        print(arch, i, 'stride', s, 'samples', len(idx))
