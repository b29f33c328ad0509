"""Facts about the course that students see: how the autograder runs a submitted notebook.

The autograder takes its default limits from here, and the book and each notebook state
them, so that what a student reads is what the grader does.
"""

__all__ = ["CELL_TIME_LIMIT_S", "NOTEBOOK_TIME_LIMIT_S", "WAIT_FACTOR", "MEMORY_LIMIT_GIB", "CPU_CORES", "SETUP_TAG"]

CELL_TIME_LIMIT_S = 240
"""CPU seconds a notebook cell may use (a per-observation Python loop of a Gibbs sampler at the
minimum number of draws needs about 130 s on a loaded 2-core machine). CPU time, not
wall-clock time: on one core it is the same on a quiet machine, and a grading machine busy
with other work does not use up a student's time (the grader's `clock` module)."""
NOTEBOOK_TIME_LIMIT_S = 600
"""CPU seconds all cells of a notebook may use together."""
WAIT_FACTOR = 4
"""Wall-clock bound of every time limit, as a multiple of it: a cell that waits without
computing (sleep, input) is stopped after WAIT_FACTOR x CELL_TIME_LIMIT_S seconds."""
MEMORY_LIMIT_GIB = 2
CPU_CORES = 1
SETUP_TAG = "gmmcourse-setup"
"""The tag of the set-up cell (and of the "before you run" note above it) that every published
notebook starts with: it installs the course package where a student runs the notebook; the
autograder never runs it (no network in its sandbox)."""
