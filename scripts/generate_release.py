"""Regenerate the student release exercises/<id>/ from solutions/<id>/ with nbgrader, after
bringing each source notebook's "How this notebook is graded" cell up to date.

Usage: python scripts/generate_release.py [assignment_id ...]
"""

import sys

from gmmcourse.grading.release import generate_release, sync_grading_environment

if __name__ == "__main__":
    for path in sync_grading_environment():
        print(f"updated the grading-environment cell of {path}")
    generate_release(sys.argv[1:] or None, quiet=False)
