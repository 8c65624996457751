#!/usr/bin/env python3
"""Writes <name>.expected next to each <name>.json given: the document as
Python's json module reads it, in a canonical form that tests/test_json.c
reproduces from vlm_json: null N, booleans T/F, numbers %.17g, strings and
keys as hex of their UTF-8 bytes in quotes, arrays [x,...,] and objects
{key:x,...,} in document order.
Usage: python3 tests/data/json/flatten.py tests/data/json/*.json"""
import json, sys

class Obj(list):
    pass

def dump(v, o):
    if v is None: o.append('N')
    elif v is True: o.append('T')
    elif v is False: o.append('F')
    elif isinstance(v, (int, float)): o.append('%.17g' % float(v))
    elif isinstance(v, str): o.append('"' + v.encode('utf-8').hex() + '"')
    elif isinstance(v, list) and not isinstance(v, Obj):
        o.append('[')
        for x in v: dump(x, o); o.append(',')
        o.append(']')
    else:
        o.append('{')
        for k, x in v: o.append(k.encode('utf-8').hex() + ':'); dump(x, o); o.append(',')
        o.append('}')

for path in sys.argv[1:]:
    doc = json.load(open(path, encoding='utf-8'), object_pairs_hook=Obj)
    out = []
    dump(doc, out)
    open(path.rsplit('.', 1)[0] + '.expected', 'w').write(''.join(out) + '\n')
