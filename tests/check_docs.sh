#!/bin/sh
# docs/ARCHITECTURE.md and the README's layout section match the tree: every
# path either names (folders ending in /, files with an extension) exists.
cd "$(dirname "$0")/.."
bad=0; n=0
for doc in docs/ARCHITECTURE.md README.md; do
    for p in $(grep -o '\*\*[a-z_./]*/\*\*\|`[a-z_][a-z0-9_./]*/`\|`[a-z_][a-z0-9_/]*\.\(c\|h\|cu\|sh\|md\|py\)`\|\*\*[a-z_/]*\.\(c\|h\|cu\)\*\*' "$doc" |
               tr -d '`*' | sort -u); do
        n=$((n+1))
        case $p in */*) f=$p ;; *) f=$(find src models cli tests tools docs . -maxdepth 3 -name "$p" 2>/dev/null | head -n 1) ;; esac
        if [ -z "$f" ] || [ ! -e "$f" ]; then echo "$doc names $p, which is not in the tree"; bad=1; fi
    done
done
echo "$n paths checked"
exit $bad
