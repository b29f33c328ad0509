#!/bin/sh
# Run a command with src/ pinned to HEAD's committed version, in a private mount namespace:
#   benchmarks/pin_src.sh .venv/bin/python benchmarks/bench_grading.py ...
# A long benchmark on a checkout that others edit and commit to meanwhile then measures one
# version of the code, the one common.commit() names at its start (the bind mount is seen by
# this command and its children only; needs root). The tree under test is extracted with
# `git archive`, so uncommitted edits in src/ are not measured.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
pinned=$(mktemp -d /tmp/gmm-pinned-src.XXXXXX)
trap 'rm -rf "$pinned"' EXIT
git -C "$root" archive HEAD src | tar -x -C "$pinned"
GMM_SRC_PINNED=$(git -C "$root" rev-parse --short=12 HEAD)
export GMM_SRC_PINNED
echo "src/ pinned at $GMM_SRC_PINNED" >&2
unshare -m --propagation private sh -c 'mount --bind "$1/src" "$2/src" && shift 2 && cd "$0" && exec "$@"' \
    "$root" "$pinned" "$root" "$@"
