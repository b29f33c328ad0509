"""Named in the instructor's generated nbgrader_config.py: nbgrader's in-kernel grading is
refused for this course.

``nbgrader autograde`` (also Formgrader's "autograde" button) would run each submission in a
kernel of the instructor's server, unsandboxed, copy the hidden tests into the autograded
notebooks and overwrite the sandboxed grader's results (with ``--force`` it first deletes
them); ``nbgrader generate_feedback`` would render those hidden tests into the feedback.
Both converters build their exporter before touching any file, so an exporter that refuses
to be built stops them there. Grade with ``server/course autograde`` instead.
"""

from nbconvert.exporters import NotebookExporter

MESSAGE = (
    "this course grades with `server/course autograde` (the sandboxed grader: hidden checks never run in "
    "the student's kernel nor appear in feedback); nbgrader's autograde and generate_feedback are disabled"
)


class RefuseInKernelGrading(NotebookExporter):
    def __init__(self, *args, **kwargs):
        raise RuntimeError(MESSAGE)
