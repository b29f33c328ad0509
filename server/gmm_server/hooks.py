"""nbgrader hooks named in the instructor's generated nbgrader_config.py."""


def refuse_in_kernel_grading(assignment=None, student=None, notebooks=None, **kw):
    raise RuntimeError(
        "this course grades with `server/course autograde` (the sandboxed grader; hidden checks never "
        "run in the student's kernel nor appear in feedback); nbgrader autograde / generate_feedback are disabled"
    )
