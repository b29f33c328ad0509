"""The course site's build (``make site``), one job a module; `scripts/build_site.py` is its command line.

config     the repository's paths, ``_config.yml``, the site's address
convert    an executed MyST chapter as a plain notebook
wheel      the student wheel, its pinned requirements and extras
setupcell  the set-up cell (``scripts/setup_cell.py``, read as text) and the note above it
bundle     the publishable bundle
"""
