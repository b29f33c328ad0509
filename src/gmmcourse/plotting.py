"""The course's figure style: one colour-blind-safe palette and one matplotlib style.

Every chapter starts with ``from gmmcourse.plotting import COLOURS, use_course_style`` and
``use_course_style()``; colours are named by role (``COLOURS["hamburger"]``) or by hue
(``COLOURS["blue"]``), from the Okabe-Ito palette {Okabe and Ito 2008}, which stays
distinguishable under the common colour-vision deficiencies.
"""

from __future__ import annotations

__all__ = ["OKABE_ITO", "COLOURS", "CHAIN_COLOURS", "STYLE", "PAGE_WIDTH_IN", "MIN_FONT_PT", "use_course_style",
           "legend_below"]

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

PAGE_WIDTH_IN = 8.0
"""The widest figure, in inches at ``STYLE["figure.dpi"]``, that the book's content column
(about 880 px) shows without shrinking it: a wider figure is scaled down, and its text with
it, so a 11-inch figure's 11-point labels read like 8-point ones. Figures are made at most
this wide; more panels get more height, not more width."""

MIN_FONT_PT = 9
"""The smallest font size (points) of any figure text."""


def use_course_style() -> None:
    """Apply `STYLE` to matplotlib (call once at the top of a chapter)."""
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)


def legend_below(ax, ncol: int = 2, **kwargs):
    """A legend for `ax` under its x-axis label, outside the data (the figure's
    ``tight_layout`` makes room for it). Returns the legend."""
    kwargs.setdefault("frameon", False)
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=ncol, **kwargs)
