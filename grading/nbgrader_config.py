"""nbgrader course configuration: the course root is this folder (grading/).

Sources (with solutions and hidden tests) live in ../solutions/<id>/, the generated student
release in ../exercises/<id>/. Regenerate the release with ``python scripts/generate_release.py``.
"""

import os

c = get_config()  # noqa: F821

_here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = _here
c.CourseDirectory.source_directory = os.path.join("..", "solutions")
c.CourseDirectory.release_directory = os.path.join("..", "exercises")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(_here, "gradebook.db")
c.CourseDirectory.course_id = "gmm-course"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", ".jax_cache"]
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearOutput.enabled = True
c.Exchange.assignment_dir = os.path.dirname(_here)
# Student notebooks are untrusted: the autograder writes the autograded notebooks already
# inert (gmmcourse.grading.html_safety: nh3 allow-list, MathJax off student text, bounded
# nesting); formgrader's own bleach pass on outputs is the second layer.
c.HTMLExporter.sanitize_html = True
