"""The course's figure style: one colour-blind-safe palette and one matplotlib style.

Every chapter starts with ``from gmmcourse.plotting import COLOURS, use_course_style`` and
``use_course_style()``; colours are named by role (``COLOURS["hamburger"]``) or by hue
(``COLOURS["blue"]``), from the Okabe-Ito palette {Okabe and Ito 2008}, which stays
distinguishable under the common colour-vision deficiencies.
"""

from __future__ import annotations

__all__ = ["OKABE_ITO", "COLOURS", "CHAIN_COLOURS", "STYLE", "use_course_style"]

OKABE_ITO = {
    "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "red": "#D55E00", "purple": "#CC79A7", "black": "#000000",
}
"""The eight Okabe-Ito colours by hue."""

COLOURS = {
    **OKABE_ITO,
    "hamburger": OKABE_ITO["orange"],  # the lighter bento kind
    "tonkatsu": OKABE_ITO["blue"],  # the heavier bento kind
    "data": OKABE_ITO["sky"],  # histograms of data or draws
    "estimate": OKABE_ITO["red"],  # point estimates, reference lines
    "exact": OKABE_ITO["black"],  # exact values
}
"""Palette by hue and by role."""

CHAIN_COLOURS = [OKABE_ITO[c] for c in ("blue", "orange", "green", "purple")]
"""One colour per chain (cycled beyond four)."""

STYLE = {
    "figure.dpi": 110,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 11,
    "legend.frameon": False,
}
"""matplotlib rcParams of every figure."""


def use_course_style() -> None:
    """Apply `STYLE` to matplotlib (call once at the top of a chapter)."""
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
