"""The course server: JupyterHub + nbgrader's exchange, configured for gmm-course.

Modules: ``settings`` (paths and ports, from the environment), ``roster`` (users and
passwords), ``auth`` (the roster authenticator), ``spawner`` (each user's server in a
bubblewrap sandbox, as that user's unix account), ``exchange`` (nbgrader's file exchange
with stricter permissions), ``cli`` (``server/course ...``: start, stop, users, release,
collect, autograde, return). See docs/course-server.md.
"""
