#!/usr/bin/env python3
"""Mutation testing (make mutate): plants each bug of tests/mutants.txt, one
at a time, in a copy of the tree's sources, rebuilds, runs the tests until
the first failure, and prints the score per subsystem with the survivors.

tests/mutants.txt holds blocks:
    == NAME FILE
    - text that occurs exactly once in FILE (one or more lines)
    + what replaces it
    equivalent: why this change cannot be seen (optional; not run)
A mutant whose text is not found exactly once is an error of the list.

Usage: python3 tools/mutate.py [--check] [NAME_SUBSTRING ...]   (no name: all;
--check: only verify that each mutant's text is found once)
Builds in build-mut/ (ARCH and OPT as make's defaults); the sources are
restored after each mutant, also on Ctrl-C."""
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = "build-mut"


def parse(path):
    muts, cur, mode = [], None, None
    for raw in open(path, encoding="utf-8").read().split("\n"):
        if raw.startswith("== "):
            name, file = raw[3:].split()
            cur = {"name": name, "file": file, "old": [], "new": [], "equivalent": None}
            muts.append(cur)
            mode = None
        elif cur is None or raw.startswith("#"):
            continue
        elif raw.startswith("- ") or raw == "-":
            cur["old"].append(raw[2:])
        elif raw.startswith("+ ") or raw == "+":
            cur["new"].append(raw[2:])
        elif raw.startswith("equivalent:"):
            cur["equivalent"] = raw[len("equivalent:"):].strip()
    for m in muts:
        m["old"], m["new"] = "\n".join(m["old"]), "\n".join(m["new"])
    return muts


def subsystem(file):
    parts = file.split("/")
    return parts[1] if parts[0] == "src" else parts[0]


def run(cmd, timeout):
    try:
        r = subprocess.run(cmd, shell=True, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=dict(os.environ, VLM_BIN=f"{BUILD}/vlm",
                                                     VLM_CAPTION=f"{BUILD}/examples/caption"))
        return r.returncode, r.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return -1, "timeout"


def tests():
    """Every test, fastest first: unit tests, tree checks, golden cases."""
    unit = sorted(f[:-2] for f in os.listdir(os.path.join(ROOT, "tests")) if f.startswith("test_") and f.endswith(".c"))
    checks = sorted(f for f in os.listdir(os.path.join(ROOT, "tests")) if f.startswith("check_") and f.endswith(".sh")
                    and f not in ("check_embed.sh", "check_docs.sh", "check_layers.sh"))
    golden = sorted(d for d in os.listdir(os.path.join(ROOT, "tests/golden"))
                    if os.path.exists(os.path.join(ROOT, "tests/golden", d, "case.json")))
    return ([(u, f"{BUILD}/tests/{u}") for u in unit] + [(c, f"sh tests/{c} {BUILD}") for c in checks] +
            [("golden:" + g, f"{BUILD}/vlm golden tests/golden/{g}") for g in golden])


def main():
    muts = parse(os.path.join(ROOT, "tests/mutants.txt"))
    check_only = "--check" in sys.argv
    only = [a for a in sys.argv[1:] if a != "--check"]
    if only:
        muts = [m for m in muts if any(o in m["name"] for o in only)]
    bad = []
    for m in muts:
        text = open(os.path.join(ROOT, m["file"]), encoding="utf-8").read()
        if text.count(m["old"]) != 1:
            bad.append("%s: its text occurs %d times in %s" % (m["name"], text.count(m["old"]), m["file"]))
    if bad:
        print("\n".join(bad))
        sys.exit(2)
    if check_only:
        print("%d mutants, each found once" % len(muts))
        return
    build = f"make -j2 BUILD={BUILD} {BUILD}/vlm $(ls tests/test_*.c | sed 's|tests/\\(.*\\)\\.c|{BUILD}/tests/\\1|') " \
            f"$(ls examples/*.c | sed 's|examples/\\(.*\\)\\.c|{BUILD}/examples/\\1|')"
    rc, out = run(build, 900)
    if rc != 0:
        print("the unmutated tree does not build:\n" + out[-3000:])
        sys.exit(2)
    suite = tests()
    for name, cmd in suite:
        rc, out = run(cmd, 600)
        if rc != 0:
            print("the unmutated tree fails %s:\n%s" % (name, out[-2000:]))
            sys.exit(2)
    results = []
    t_all = time.time()
    for m in muts:
        path = os.path.join(ROOT, m["file"])
        if m["equivalent"]:
            results.append((m, "equivalent", m["equivalent"]))
            print("%-34s equivalent: %s" % (m["name"], m["equivalent"]), flush=True)
            continue
        saved = open(path, encoding="utf-8").read()
        t0 = time.time()
        try:
            open(path, "w", encoding="utf-8").write(saved.replace(m["old"], m["new"]))
            rc, out = run(build, 900)
            if rc != 0:
                verdict, by = "killed", "build fails"
            else:
                verdict, by = "survived", ""
                for name, cmd in suite:
                    rc, out = run(cmd, 60)
                    if rc != 0:
                        verdict, by = "killed", name + (" (timeout)" if rc == -1 else "")
                        break
        finally:
            open(path, "w", encoding="utf-8").write(saved)
            os.utime(path, None)
        results.append((m, verdict, by))
        print("%-34s %-8s %-28s %5.0f s" % (m["name"], verdict, by, time.time() - t0), flush=True)
    run(build, 900)  # leave build-mut as the tree is
    print("\n== mutation score ==")
    subs = {}
    for m, v, _ in results:
        s = subs.setdefault(subsystem(m["file"]), [0, 0, 0])
        s[0 if v == "killed" else 1 if v == "survived" else 2] += 1
    for s, (k, sv, eq) in sorted(subs.items()):
        print("%-10s %3d mutants: %3d killed, %d survived, %d equivalent" % (s, k + sv + eq, k, sv, eq))
    k = sum(v[0] for v in subs.values())
    sv = sum(v[1] for v in subs.values())
    eq = sum(v[2] for v in subs.values())
    print("total      %3d mutants: %3d killed, %d survived, %d equivalent; score %.1f%% of %d non-equivalent"
          " (%.0f s)" % (k + sv + eq, k, sv, eq, 100.0 * k / max(k + sv, 1), k + sv, time.time() - t_all))
    for m, v, _ in results:
        if v == "survived":
            print("SURVIVED %s (%s)" % (m["name"], m["file"]))
    sys.exit(0)


if __name__ == "__main__":
    main()
