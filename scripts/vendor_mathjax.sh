#!/usr/bin/env bash
# Copy the MathJax files the book serves (so maths renders offline) from the npm package
# pinned in package-lock.json (node_modules/mathjax, installed by `npm ci`) into
# chapters/_static/mathjax (not committed). The list of files is scripts/mathjax-files.txt:
# the es5 TeX-to-CHTML build, its TeX extensions, CHTML fonts, accessibility and menu.
# Called by scripts/build_book.sh; idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/node_modules/mathjax"
DEST="$ROOT/chapters/_static/mathjax"
if [[ ! -f "$SRC/es5/tex-chtml.js" ]]; then
    echo "MathJax is missing: run 'npm ci' in $ROOT (make book does it; node >= 18 needed)" >&2
    exit 1
fi
version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$SRC/package.json" | head -1)
readme="MathJax $version (Apache-2.0), es5 build subset from the npm package mathjax@$version (package-lock.json), copied by scripts/vendor_mathjax.sh so the site renders maths offline."
if [[ -f "$DEST/tex-chtml.js" && "$(cat "$DEST/README.txt" 2>/dev/null)" == "$readme" ]]; then
    exit 0  # this version is already there
fi
rm -rf "$DEST"
while IFS= read -r f; do
    [[ -z "$f" ]] && continue
    if [[ "$f" == "LICENSE" ]]; then from="$SRC/LICENSE"; else from="$SRC/es5/$f"; fi
    mkdir -p "$DEST/$(dirname "$f")"
    cp "$from" "$DEST/$f"
done < "$ROOT/scripts/mathjax-files.txt"
echo "$readme" > "$DEST/README.txt"
echo "MathJax $version copied into chapters/_static/mathjax"
