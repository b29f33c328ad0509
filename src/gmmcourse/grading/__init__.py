"""Autograding for gmm-course (``python -m gmmcourse.grading autograde``).

Kept import-light: the engine is in `gmmcourse.grading.engine`; the contract in
`gmmcourse.grading.spec`.
"""
