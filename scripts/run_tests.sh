#!/usr/bin/env bash
# `make test`: the book build (warnings as errors) and every test.
#
#   scripts/run_tests.sh [pytest arguments]
#
# Most tests wait on something (a sandboxed kernel, a time limit, a JupyterHub, a browser),
# so run one after another they leave the CPUs half idle. Here, at the same time:
#   * the tests that do not read the built book run on TEST_WORKERS pytest-xdist workers
#     (one test file per worker: module fixtures are built once), at a lower CPU priority
#     (`nice -n TEST_NICE`, default 5; 0: none): they finish well before the book's side;
#   * the book builds (log: _build/book-build.log), then the tests of the built book
#     (marker `book`) run (log: _build/book-tests.log; printed at the end): the build and
#     these tests are the run's critical path, so they keep the normal priority.
# The exit status is the first failure's; pytest's "no tests collected" (5) is not a failure.
# TEST_WORKERS=0 runs each pytest session in one process, one test after another.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
WORKERS="${TEST_WORKERS:-3}"
NICE="${TEST_NICE:-5}"
[[ "$NICE" =~ ^[0-9]+$ && "$NICE" -le 19 ]] || { echo "TEST_NICE must be a niceness from 0 to 19, not '$NICE'" >&2; exit 2; }
if [[ "$WORKERS" == 0 ]]; then xdist=(-p no:xdist); book_xdist=(-p no:xdist)
else xdist=(-n "$WORKERS" --dist loadfile); book_xdist=(-n 1); fi

ok() { [[ $1 -eq 0 || $1 -eq 5 ]]; }
start=$(date +%s)
mkdir -p _build
build_log="$ROOT/_build/book-build.log"
tests_log="$ROOT/_build/book-tests.log"
status_file="$ROOT/_build/.book-status"
rm -f "$status_file"

# The slowest book tests share nothing with the others: on a full run each goes in a session of
# its own beside them (its log appended to _build/book-tests.log), so that the two CPUs stay
# busy once the other tests are over: the Colab-like test (a fresh venv shaped like Colab's, the
# set-up cell's pip install, one chapter run) and the site's tests (their fresh-venv test runs
# every published notebook again, two at a time).
SIDE=(tests/test_colab_like.py tests/test_site.py)
book_side() {
    scripts/build_book.sh >"$build_log" 2>&1
    local b=$?
    if [[ $b -ne 0 ]]; then echo "build $b" >"$status_file"; return; fi
    if [[ "$WORKERS" != 0 && $# -eq 0 ]]; then
        local pids=() logs=() ignore=() f
        for f in "${SIDE[@]}"; do
            logs+=("$ROOT/_build/book-tests-$(basename "$f" .py).log")
            "$PY" -m pytest -p no:xdist -m book --durations=10 "$f" >"${logs[-1]}" 2>&1 &
            pids+=($!)
            ignore+=(--ignore="$f")
        done
        "$PY" -m pytest "${book_xdist[@]}" -m book --durations=15 "${ignore[@]}" >"$tests_log" 2>&1
        local first=$? i st
        for i in "${!pids[@]}"; do
            wait "${pids[$i]}"
            st=$?
            cat "${logs[$i]}" >>"$tests_log"
            ok "$first" && first=$st
        done
        echo "tests $first" >"$status_file"
    else
        "$PY" -m pytest "${book_xdist[@]}" -m book --durations=15 "$@" >"$tests_log" 2>&1
        echo "tests $?" >"$status_file"
    fi
}
book_side "$@" &
book_pid=$!
trap 'kill "$book_pid" 2>/dev/null' INT TERM

echo "== tests (meanwhile the book builds, then its tests run: $build_log, $tests_log)"
nice -n "$NICE" "$PY" -m pytest "${xdist[@]}" -m "not book" --durations=25 "$@"
tests=$?
echo "== tests done after $(( $(date +%s) - start )) s"

wait "$book_pid"
trap - INT TERM
read -r what book <"$status_file" 2>/dev/null || { what=build; book=1; }
if [[ "$what" == build ]]; then
    cat "$build_log"
    echo "== the book build FAILED (exit $book); its log is above and in $build_log"
else
    tail -n 3 "$build_log"
    echo "== tests of the built book ($tests_log)"
    cat "$tests_log"
fi

echo "== make test: $(( $(date +%s) - start )) s (tests: exit $tests, book: $what exit $book)"
ok "$tests" || exit "$tests"
ok "$book" || exit "$book"
exit 0
