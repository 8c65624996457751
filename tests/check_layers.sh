#!/bin/sh
# The layering of src/ (docs/ARCHITECTURE.md): each subsystem includes only
# the headers of the subsystems below it (api -> text, vision, io -> core;
# the CPU backend in src/cpu -> core),
# and the core names no model, file format or family.
cd "$(dirname "$0")/.."
bad=0
allowed() {
    case $1 in
        core) echo "core" ;;
        io) echo "core io" ;;
        text) echo "core io text" ;;
        vision) echo "core io vision" ;;
        api) echo "core io text vision api" ;;
        cpu) echo "core cpu" ;;   # a backend sees the core only
    esac
}
for d in core io text vision api cpu; do
    [ -d "src/$d" ] || { echo "missing folder src/$d"; bad=1; continue; }
    ok=$(allowed $d)
    for f in src/$d/*.c src/$d/*.h; do
        for inc in $(sed -n 's/^#include "\([a-z]*\)\/.*/\1/p' "$f"); do
            case " $ok " in *" $inc "*) ;; *) echo "$f includes $inc/ (layer $d may use: $ok)"; bad=1 ;; esac
        done
        if grep -q '^#include "vlm\.h"' "$f"; then echo "$f includes the umbrella vlm.h"; bad=1; fi
    done
done
# Code only: comments may say whom a helper serves.
if sed -e 's|/\*.*\*/||g' -e '/^ *\*/d' -e '/^ *\/\*/d' src/core/*.c src/core/*.h |
   grep -nEi 'qwen|gemma|internvl|idefics|smolvlm|vlm_model|vlm_arch|vlm_json|vlm_st_'; then
    echo "the core names a model, family or file format (above)"; bad=1
fi
[ $bad -eq 0 ] && echo "layers ok"
exit $bad
