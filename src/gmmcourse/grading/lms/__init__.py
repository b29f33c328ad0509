"""Submissions from an LMS: read a zip of submissions downloaded from Canvas or Moodle (or
named for nbgrader's ``zip_collect``), safely, into nbgrader's layout
``<course>/submitted/<student>/<assignment>/<notebook>.ipynb`` (+ ``timestamp.txt``), so
that the normal grader grades it. See docs/grading.md, "Submissions from an LMS".

One job only: nothing here runs or grades a notebook. The zip is hostile input:

* it is never extracted (no ``extractall``): each entry is checked, then read as a stream
  with a byte cap; the path written is built from the roster's student id and the
  assignment, never from the entry's name, so an entry name cannot choose where it lands;
* absolute paths, ``..``, symbolic links and other special files (Unix mode in the zip's
  external attributes), encrypted entries, entries declared over `MAX_ENTRY_BYTES`, entries
  that expand past the cap, past their declared size or past `MAX_RATIO` times their
  compressed size (zip bombs: detected while streaming, the header is not trusted), more
  than `MAX_TOTAL_BYTES` read in all, more than `MAX_ENTRIES` entries: rejected and reported;
* a student is named only by the LMS's own part of an entry's name (the rest is a file name
  the student chose, and can imitate another LMS's naming): ``--lms auto`` decides the naming
  once for the whole zip (`decide_lms`), and a name that reads as two students is reported,
  never given to either;
* files that are not notebooks are reported and skipped;
* an existing submission is never overwritten silently: the same bytes are left alone
  (re-importing a zip changes nothing), a different notebook replaces the old one by a
  rename in the same folder after the old one was kept under
  ``<course>/lms-imports/<stamp>/replaced/``, and an older notebook than the one already
  there is not imported;
* nothing is written outside the course folder (no symbolic link is followed under it);
* every problem goes into one report (printed, and written to
  ``<course>/lms-imports/<stamp>/report.txt`` and ``report.json``), never a traceback.

The package, one job per module: `report` (the report and `show`), `roster` (who is who),
`names` (what an entry's name says; ``--lms auto``), `zipread` (reading the zip safely; its
caps) and `importer` (placing the notebooks).
"""

from .importer import import_zip
from .names import FORMATS, decide_lms, parse_name, readings
from .report import ImportReport, LMSImportError
from .roster import Roster, load_roster, save_roster

__all__ = ["LMSImportError", "ImportReport", "Roster", "load_roster", "save_roster", "import_zip", "parse_name",
           "readings", "decide_lms", "FORMATS"]
