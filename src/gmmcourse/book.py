"""Gluing a chapter's numbers into the book: one `glue_all` call per cell.

The book's chapters compute their numbers in visible cells and glue them for the prose
(``{glue:text}`name```) in a hidden ``remove-cell`` cell; `glue_all` glues a whole dict of
them in one call, so that cell reads as one statement instead of dozens of ``glue`` lines.
Students never call it (the site's notebooks drop ``remove-cell`` cells), and ``myst_nb`` is
imported only when it is called, so the student package does not need it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["glue_all"]


def glue_all(values: Mapping[str, object], display: bool = False) -> None:
    """Glue every value of `values` under its name, in the dict's order.

    Args:
        values: glue name -> value, each as ``myst_nb.glue(name, value, display)`` takes it.
        display: also show each value in the cell's output (myst-nb's ``display``); the
            chapters glue numbers for the prose only, hence False.
    """
    from myst_nb import glue

    for name, value in values.items():
        glue(name, value, display=display)
