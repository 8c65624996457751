#!/usr/bin/env python3
"""Writes <name>.txt next to each <name>.safetensors given: the header as
Python's json module reads it, one tensor per line sorted by name:
  name dtype ndim dims... begin end fnv1a32(data)
first line: "n_tensors N metadata <json or null>". Used by tests/test_safetensors.c.
Usage: python3 tests/data/st/listing.py tests/data/st/*.safetensors"""
import json, struct, sys

def fnv1a32(b):
    h = 0x811C9DC5
    for x in b:
        h = ((h ^ x) * 0x01000193) & 0xFFFFFFFF
    return h

for path in sys.argv[1:]:
    raw = open(path, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    meta = h.pop('__metadata__', None)
    data = raw[8 + n:]
    lines = ['n_tensors %d metadata %s' % (len(h), json.dumps(meta, sort_keys=True, separators=(',', ':')))]
    for name in sorted(h, key=lambda s: s.encode()):
        e = h[name]
        b, en = e['data_offsets']
        lines.append('%s %s %d %s %d %d %08x' % (name, e['dtype'], len(e['shape']),
                     ' '.join(str(d) for d in e['shape']) or '-', b, en, fnv1a32(data[b:en])))
    open(path.rsplit('.', 1)[0] + '.txt', 'w').write('\n'.join(lines) + '\n')
