"""Corpora of submissions (correct styles and typical mistakes) shared by the tests and the benchmarks."""
