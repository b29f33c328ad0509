"""Student- and roster-authored text made safe for an instructor's browser, in bounded time.

Everything here runs in the trusted grader process on text a student chose, so each function
is total (any ``str``, lone surrogates included) and bounded: the HTML sanitiser is ``nh3``
(the Rust ``ammonia`` allow-list sanitiser: html5ever's parser, so entity-obfuscated schemes
such as ``java&#115;cript:`` or ``javascript&colon;`` are decoded before the scheme check),
markdown is rendered by ``markdown-it-py`` with a nesting cap, and a cell over `MAX_CELL_CHARS`
characters, `MAX_CELL_TAGS` tags (the sanitiser's cost grows with nesting depth squared) or
`MAX_CELL_MARKS` markdown delimiters (the renderer's cost grows with them) is shown as
escaped, truncated plain text with a note instead. A notebook shares one `Budget`
(`MAX_NOTEBOOK_CHARS`, `MAX_NOTEBOOK_MARKS`): past it, every further cell is plain text too.

Links keep absolute ``http``, ``https`` and ``mailto`` URLs only (a relative link could open a
student's file on the instructor's Jupyter server); images only inline rasters (``data:image``
PNG, JPEG, GIF, WebP: no request leaves the page), other images become their alt text.

Rendered student HTML is wrapped in a ``div`` that MathJax skips (``tex2jax_ignore`` /
``mathjax_ignore``): LaTeX ``\\href{javascript:...}`` cannot become a link, and student
``class`` attributes (which could re-enable MathJax) are never kept.
"""

from __future__ import annotations

import html
import re

__all__ = ["MAX_CELL_CHARS", "MAX_CELL_TAGS", "MAX_DEPTH", "MAX_CELL_MARKS", "MAX_NOTEBOOK_CHARS", "MAX_NOTEBOOK_MARKS",
           "MAX_NOTEBOOK_TAGS", "Budget", "fix_text", "plain_html", "clean_html", "markdown_html", "safe_name",
           "UnsafeName"]

MAX_CELL_CHARS = 64_000
"""Largest student cell or output (characters) that is rendered and sanitised; larger ones are
shown as truncated plain text."""
MAX_CELL_TAGS = 2_000
"""Most ``<`` in one cell that is sanitised (nh3's time grows with depth squared: 2,000 nested
tags cost about 0.04 s; 16,000 cost 2.3 s)."""
MAX_DEPTH = 64
"""Deepest element nesting kept (honest HTML nests a few levels; 1,000 levels cost formgrader's
own bleach pass 1.8 s per page view)."""
MAX_NOTEBOOK_CHARS = 1_000_000
"""Student text rendered as HTML per notebook; past it, cells are plain text."""
MARKS = "[]*_!`<>&$\\"
"""Markdown delimiters: markdown-it-py's time grows with them (about 0.1 ms each, pure Python;
64,000 ``![`` take 4.5 s), not with plain text."""
MAX_CELL_MARKS = 1_000
MAX_NOTEBOOK_MARKS = 5_000
"""Most delimiters rendered per cell and per notebook (the course's notebooks have at most 85
in a cell and 300 in all); past them, plain text."""
MAX_NOTEBOOK_TAGS = 20_000
"""Most tags sanitised per notebook (a cell may have `MAX_CELL_TAGS`)."""
PLAIN_CHARS = 20_000
"""Characters of a cell kept in its plain-text rendering."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_IGNORE = '<div class="tex2jax_ignore mathjax_ignore">'
_IMAGE_DATA = re.compile(r"(?i)^data:image/(png|jpeg|gif|webp);base64,[a-z0-9+/=\s]*$")
_SCHEMES = {"http", "https", "mailto", "data"}


def fix_text(text) -> str:
    """``text`` as a ``str`` that UTF-8 can encode: lone surrogates become U+FFFD; anything not
    a string becomes its ``str``."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return _SURROGATE.sub("\ufffd", text)


class Budget:
    """What a notebook may still have rendered as HTML: characters of student text, markdown
    delimiters (`MARKS`, which decide markdown-it's time) and tags (nh3's)."""

    def __init__(self, chars: int = MAX_NOTEBOOK_CHARS, marks: int = MAX_NOTEBOOK_MARKS,
                 tags: int = MAX_NOTEBOOK_TAGS):
        self.left = {"chars": chars, "marks": marks, "tags": tags}

    def take(self, **cost: int) -> bool:
        if any(n > self.left[k] for k, n in cost.items()):
            self.left = dict.fromkeys(self.left, 0)
            return False
        for k, n in cost.items():
            self.left[k] -= n
        return True


def plain_html(text: str, note: str = "") -> str:
    """``text`` escaped in a ``<pre>`` (truncated to `PLAIN_CHARS`), after an optional note."""
    text = fix_text(text)
    cut = len(text) > PLAIN_CHARS
    body = html.escape(text[:PLAIN_CHARS]) + ("\n[... truncated]" if cut else "")
    head = f"<p><em>[autograder: {html.escape(note)}]</em></p>" if note else ""
    return _one_line(f"{_IGNORE}{head}<pre>{body}</pre></div>")


def _attribute(element: str, attribute: str, value: str) -> str | None:
    inline = _IMAGE_DATA.match(value.strip()) is not None
    if element == "img" and attribute == "src":
        return value if inline else None  # no request leaves the page (tracking, same-origin GETs)
    if value.strip().lower().startswith("data:"):
        return None  # data: URLs only as inline raster images
    return value


_IMG = re.compile(r"<img(\s[^>]*)?>")  # nh3 writes ">" in an attribute value as &gt;
_ALT = re.compile(r'\salt="([^"]*)"')


def _bare_images(markup: str) -> str:
    """An ``<img>`` left without a source becomes its alt text."""
    def sub(m):
        attrs = m.group(1) or ""
        if re.search(r'\ssrc="', attrs):
            return m.group(0)
        alt = _ALT.search(attrs)
        return f"[image: {alt.group(1)}]" if alt and alt.group(1) else "[image]"
    return _IMG.sub(sub, markup)


def _marks(text: str) -> int:
    return sum(text.count(c) for c in MARKS)


def _over(text: str, budget: Budget | None, markdown: bool = False) -> str | None:
    if len(text) > MAX_CELL_CHARS:
        return f"this cell has {len(text):,} characters, more than the {MAX_CELL_CHARS:,} rendered; shown as plain text"
    tags = text.count("<")
    if tags > MAX_CELL_TAGS:
        return f"this cell has more than {MAX_CELL_TAGS:,} tags; shown as plain text"
    marks = _marks(text) if markdown else 0
    if marks > MAX_CELL_MARKS:
        return f"this cell has more than {MAX_CELL_MARKS:,} markdown delimiters; shown as plain text"
    if budget is not None and not budget.take(chars=len(text), marks=marks, tags=tags):
        return "the notebook's rendered text is over its limit; shown as plain text"
    return None


def clean_html(text, budget: Budget | None = None) -> str:
    """Student HTML (a ``text/html`` output) through the allow-list sanitiser, wrapped so that
    MathJax leaves it alone; over the caps, its escaped plain text (`plain_html`)."""
    text = fix_text(text)
    note = _over(text, budget)
    return plain_html(text, note) if note else _sanitised(text, text)


def _sanitised(markup: str, original: str) -> str:
    import nh3

    safe = nh3.clean(markup, url_schemes=_SCHEMES, url_relative="deny", attribute_filter=_attribute,
                     link_rel="noopener noreferrer nofollow")
    if _depth(safe) > MAX_DEPTH:  # never honest, and slow in any later HTML parser (formgrader's bleach)
        return plain_html(original, f"this cell nests elements more than {MAX_DEPTH} deep; shown as plain text")
    return _one_line(f"{_IGNORE}{_bare_images(safe)}</div>")


_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)")
_VOID = frozenset({"area", "br", "col", "hr", "img", "wbr"})


def _depth(markup: str) -> int:
    """Deepest element nesting of nh3's (well-formed) output, in one pass."""
    depth = deepest = 0
    for close, tag in _TAG.findall(markup):
        if tag.lower() in _VOID:
            continue
        depth += -1 if close else 1
        deepest = max(deepest, depth)
    return deepest


def markdown_html(text, budget: Budget | None = None) -> str:
    """A student's markdown as sanitised HTML on ONE line: a markdown renderer (formgrader's
    ``markdown2html``) passes it through as a single raw HTML block, so nothing in it is read as
    markdown again (a blank line would end the block and let the rest become links)."""
    from markdown_it import MarkdownIt

    text = fix_text(text)
    note = _over(text, budget, markdown=True)
    if note:
        return plain_html(text, note)
    # the caps apply to the student's text; rendered, it nests at most 20 deep (maxNesting)
    return _sanitised(MarkdownIt("commonmark", {"html": True, "maxNesting": 20}).render(text), text)


def _one_line(markup: str) -> str:
    # a newline in HTML text or between tags is the character reference &#10; to an HTML parser
    return markup.replace("\r", "&#13;").replace("\n", "&#10;")


_NAME = re.compile(r"^[^\x00-\x1f\x7f<>&\"`\\{}\[\]|;=]{0,100}$")


class UnsafeName(ValueError):
    """A roster name that cannot be stored (it would be markup in formgrader's pages)."""


def safe_name(value, field: str = "name") -> str | None:
    """A roster name or e-mail as stored in the gradebook, or raise `UnsafeName` (one line).

    Formgrader prints names into its pages without escaping, so a name holds letters, digits,
    spaces and the punctuation of real names (``.-'’,()``; any script), never markup or control
    characters, and at most 100 characters. None and "" are kept as they are."""
    if value is None or value == "":
        return value
    text = fix_text(value).strip()
    if "\ufffd" in text or not _NAME.match(text):
        shown = text[:40].encode("ascii", "backslashreplace").decode()
        raise UnsafeName(f"{field} {shown!r} is not a plain name (no < > & \" ` \\ {{ }} [ ] | ; = or control "
                         "characters, at most 100 characters)")
    return text
