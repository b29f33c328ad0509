"""Regenerate the student release exercises/<id>/ from solutions/<id>/ with nbgrader.

Usage: python scripts/generate_release.py [assignment_id ...]
"""

import sys

from gmmcourse.grading.assignments import generate_release

if __name__ == "__main__":
    generate_release(sys.argv[1:] or None, quiet=False)
