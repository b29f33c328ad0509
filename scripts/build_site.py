"""Assemble the publishable course bundle (``make site``) from the built book.

Usage::

    python scripts/build_site.py [--out _build/site]     # after scripts/build_book.sh

The work is done by the package beside this script, ``scripts/coursesite/`` (one job a module:
config, convert, wheel, setupcell, bundle; the bundle's layout is in ``coursesite/bundle.py``).
This file is the command line, and it re-exports the package's public names (``import
build_site as bs`` in the tests). A test that monkeypatches one of them patches the module
that uses it (e.g. ``coursesite.wheel.student_version``), not this facade.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coursesite.bundle import build_site, chapter_pages, executed_notebook, published_chapter
from coursesite.config import EXECUTED, HTML, ROOT, SITE, load_config, published_repository, site_url
from coursesite.convert import ChapterConverter, ConversionError, glue_values, residual_myst, strip_glue
from coursesite.setupcell import (
    BEFORE_YOU_RUN,
    SETUP_SOURCE,
    SETUP_TAG,
    needed_modules,
    setup_cell,
    with_setup_cell,
)
from coursesite.wheel import (
    CORE_PINS,
    EXCLUDED_MODULES,
    STUDENT_EXTRAS,
    WHEEL_DATE,
    UnprovidedImport,
    _normalise,  # the tests compare package names as pip does
    build_student_wheel,
    core_requirements,
    package_version,
    student_extras_for,
    student_package_files,
    student_requirements,
    student_version,
    wheel_name,
    write_student_folder,
)

__all__ = [
    "BEFORE_YOU_RUN", "CORE_PINS", "EXCLUDED_MODULES", "EXECUTED", "HTML", "ROOT", "SETUP_SOURCE", "SETUP_TAG", "SITE",
    "STUDENT_EXTRAS", "WHEEL_DATE", "ChapterConverter", "ConversionError", "UnprovidedImport", "_normalise",
    "build_site", "build_student_wheel", "chapter_pages", "core_requirements", "executed_notebook", "glue_values",
    "load_config", "main", "needed_modules", "package_version", "published_chapter", "published_repository",
    "residual_myst", "setup_cell", "site_url", "strip_glue", "student_extras_for", "student_package_files",
    "student_requirements", "student_version", "wheel_name", "with_setup_cell", "write_student_folder",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=SITE)
    args = ap.parse_args(argv)
    out = build_site(args.out)
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"Course bundle: {out} ({len(files)} files, {size / 1e6:.1f} MB); publish it as it is "
          f"(repository: in _config.yml names where)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
