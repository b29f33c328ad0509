#!/usr/bin/env bash
# Print the path of a Python >= 3.12 (genjax 1.0 needs it): python3.12/python3.13 on PATH
# first (only if it really runs), then pyenv's versions. Exit 1 with a message if none.
set -u
ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
for cand in python3.12 python3.13 python3; do
    p=$(command -v "$cand" 2>/dev/null) || continue
    if ok "$p"; then echo "$p"; exit 0; fi
done
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for p in "$root"/versions/3.12*/bin/python3 "$root"/versions/3.13*/bin/python3; do
    if [ -x "$p" ] && ok "$p"; then echo "$p"; exit 0; fi
done
echo "error: no Python >= 3.12 found (looked for python3.12/3.13 on PATH and under $root/versions)." >&2
echo "       genjax 1.0 needs Python >= 3.12; install one (e.g. 'pyenv install 3.12') and retry." >&2
exit 1
