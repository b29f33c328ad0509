"""nbgrader's default file exchange with stricter permissions (named in the generated
nbgrader configs through ``ExchangeFactory``).

nbgrader's own exchange keeps submissions private only by unguessable names: the inbound
folder is not listable (``2733``), but each submission is world-readable (``0644`` files in a
``0777`` folder) and the exchange root is ``0777`` without the sticky bit, so a student could
rename the course folder away and put their own in its place. Here:

* the exchange root is ``1777`` (sticky: nobody renames or deletes what others made);
* a submission is readable by its owner and the instructors' group only (``0640`` files,
  ``2770``/``2750`` folders; the inbound folder's set-gid bit gives it that group);
* collecting is ``server/course collect`` (gmm_server/collect.py): only a submission whose
  folder is owned by the student it names, regular files only, trusted times; Formgrader's
  collect button is refused;
* released feedback is readable (``0644``) in the non-listable (``0711``) feedback folder:
  a student finds their own file by a hash of the secret written at submission time.
"""

from __future__ import annotations

import glob
import os
import stat

from nbgrader.exchange.default.collect import ExchangeCollect as _Collect
from nbgrader.exchange.default.fetch_assignment import ExchangeFetchAssignment as _FetchAssignment
from nbgrader.exchange.default.fetch_feedback import ExchangeFetchFeedback as _FetchFeedback
from nbgrader.exchange.default.list import ExchangeList as _List
from nbgrader.exchange.default.release_assignment import ExchangeReleaseAssignment as _Release
from nbgrader.exchange.default.release_feedback import ExchangeReleaseFeedback as _ReleaseFeedback
from nbgrader.exchange.default.submit import ExchangeSubmit as _Submit

ROOT_MODE = 0o1777


def _ensure_root(self):
    if not os.path.isdir(self.root):
        os.makedirs(self.root)
    if stat.S_IMODE(os.stat(self.root).st_mode) != ROOT_MODE:
        try:
            os.chmod(self.root, ROOT_MODE)
        except PermissionError:
            self.fail(f"exchange root {self.root} must be mode 1777 (ask the server's administrator)")


class ExchangeReleaseAssignment(_Release):
    ensure_root = _ensure_root


def _root_readable(self):
    """A student's server shows the exchange read-only (only their own inbound is writable):
    the root must exist and be enterable, not writable (nbgrader's own check)."""
    if not os.path.isdir(self.root) or not os.access(self.root, os.R_OK | os.X_OK):
        self.fail(f"the exchange {self.root} is missing (ask the server's administrator)")


class ExchangeList(_List):
    ensure_root = _root_readable


class ExchangeFetchAssignment(_FetchAssignment):
    ensure_root = _root_readable


class ExchangeFetchFeedback(_FetchFeedback):
    ensure_root = _root_readable


class ExchangeSubmit(_Submit):
    ensure_root = _root_readable

    def copy_files(self):
        super().copy_files()
        dest = os.path.join(self.inbound_path, self.assignment_filename)
        for d, dirs, files in os.walk(dest):
            for f in files:
                os.chmod(os.path.join(d, f), 0o640)
        for d, dirs, files in list(os.walk(dest))[::-1]:
            os.chmod(d, 0o2770 if d == dest else 0o2750)


class ExchangeCollect(_Collect):
    """Formgrader's "Collect" button: refused. Collecting reads files students made and must
    run as root with the checks of gmm_server/collect.py (``server/course collect``)."""

    def init_src(self):
        self.fail("collect with `server/course collect ASSIGNMENT` (as root: regular files only, trusted "
                  "submission times); Formgrader's collect is disabled for this course")


class ExchangeReleaseFeedback(_ReleaseFeedback):
    def copy_files(self):
        super().copy_files()
        for f in glob.glob(os.path.join(self.dest_path, "*.html")):
            if os.stat(f).st_mode & 0o777 != 0o644:
                os.chmod(f, 0o644)
