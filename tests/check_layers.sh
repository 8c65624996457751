#!/bin/sh
# The layering of src/ (docs/ARCHITECTURE.md): each subsystem includes only
# the headers of the subsystems below it (api -> text, vision, io -> core;
# the CPU backend in src/cpu -> core),
# and the core names no model, file format or family.
cd "$(dirname "$0")/.."
bad=0
allowed() {
    case $1 in
        platform) echo "platform" ;;  # the OS only
        core) echo "platform core" ;;
        io) echo "platform core io" ;;
        text) echo "platform core io text" ;;
        vision) echo "platform core io vision" ;;
        api) echo "platform core io text vision api" ;;
        cpu) echo "platform core cpu" ;;   # a backend sees the core only
    esac
}
for d in platform core io text vision api cpu; do
    [ -d "src/$d" ] || { echo "missing folder src/$d"; bad=1; continue; }
    ok=$(allowed $d)
    for f in $(ls src/$d/*.c src/$d/*.h src/$d/*/*.c src/$d/*/*.h 2>/dev/null); do
        for inc in $(sed -n 's/^#include "\([a-z]*\)\/.*/\1/p' "$f"); do
            case " $ok " in *" $inc "*) ;; *) echo "$f includes $inc/ (layer $d may use: $ok)"; bad=1 ;; esac
        done
        if grep -q '^#include "vlm\.h"' "$f"; then echo "$f includes the umbrella vlm.h"; bad=1; fi
    done
done
# The OS is reached through src/platform only: elsewhere (the CLI too), C11 headers.
# The server's one exception: server/http.c resolves the address it listens on.
if grep -nE '^#include <(unistd|fcntl|pthread|sched|dirent|windows|io|direct|psapi|netdb)\.h>|^#include <(sys|netinet|arpa)/' \
    $(ls src/*/*.c src/*/*.h src/*/*/*.c src/*/*/*.h models/*.c cli/*.c server/*.c server/*.h 2>/dev/null |
      grep -v -e '^src/platform/' -e '^server/http\.c$'); then
    echo "an OS header outside src/platform (above)"; bad=1
fi
# The server is a program over the public API, like the CLI: vlm.h, not src/.
if grep -n '^#include "\(platform\|core\|io\|text\|vision\|api\|cpu\)/' server/*.c server/*.h cli/*.c 2>/dev/null; then
    echo "the server or the CLI includes the library's inner headers (above)"; bad=1
fi
# Code only: comments may say whom a helper serves.
if sed -e 's|/\*.*\*/||g' -e '/^ *\*/d' -e '/^ *\/\*/d' src/core/*.c src/core/*.h |
   grep -nEi 'qwen|gemma|internvl|idefics|smolvlm|vlm_model|vlm_arch|vlm_json|vlm_st_'; then
    echo "the core names a model, family or file format (above)"; bad=1
fi
[ $bad -eq 0 ] && echo "layers ok"
exit $bad
