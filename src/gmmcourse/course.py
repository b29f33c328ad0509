"""Facts about the course that students see: how the autograder runs a submitted notebook.

The autograder takes its default limits from here, and the book and each notebook state
them, so that what a student reads is what the grader does.
"""

__all__ = ["CELL_TIME_LIMIT_S", "NOTEBOOK_TIME_LIMIT_S", "MEMORY_LIMIT_GIB", "CPU_CORES", "SETUP_TAG"]

CELL_TIME_LIMIT_S = 240
"""Seconds a notebook cell may run (a per-observation Python loop of a Gibbs sampler at the
minimum number of draws needs about 130 s on a loaded 2-core machine)."""
NOTEBOOK_TIME_LIMIT_S = 600
"""Seconds all cells of a notebook may run together."""
MEMORY_LIMIT_GIB = 2
CPU_CORES = 1
SETUP_TAG = "gmmcourse-setup"
"""The tag of the set-up cell (and of the "before you run" note above it) that every published
notebook starts with: it installs the course package where a student runs the notebook; the
autograder never runs it (no network in its sandbox)."""
