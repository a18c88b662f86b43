"""Turn text to safe HTML: Markdown with TeX maths, and word-level diffs.

Everything a model (or a reviewer) wrote is untrusted. Markdown is parsed with raw HTML disabled,
so `<script>` comes out as text, and the result is still passed through nh3 with a short allow
list: no `hx-*` or `on*` attributes, no `style`, no `javascript:` URLs survive. Maths is emitted
as escaped TeX inside `<span class="math inline">` / `<div class="math block">`; KaTeX turns it
into formulae in the browser (static/js/review.js), so the server never trusts TeX either.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

# `breaks`: a chat turn's single newlines are line breaks, as in every chat UI.
_md = (
    MarkdownIt(
        "commonmark", {"html": False, "breaks": True, "linkify": False, "typographer": False}
    )
    .enable(["table", "strikethrough"])
    # No digits or spaces next to the dollars: "$5 and $10" in a fraud dialogue stays money.
    .use(dollarmath_plugin, allow_labels=False, allow_space=False, allow_digits=False)
)

_ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "a", "span", "div",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
_ALLOWED_CLASSES = {"span": {"math", "inline"}, "div": {"math", "block"}}

# Models often write \( ... \) and \[ ... \]; CommonMark would eat the backslashes, so they are
# turned into the dollar forms the maths plugin understands before parsing.
_PAREN_MATH = re.compile(r"\\\((.+?)\\\)")
_BRACKET_MATH = re.compile(r"\\\[(.+?)\\\]", re.DOTALL)


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        allowed_classes=_ALLOWED_CLASSES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


@lru_cache(maxsize=4096)
def _render(text: str) -> str:
    source = _BRACKET_MATH.sub(lambda m: f"\n\n$${m.group(1)}$$\n\n", text)
    source = _PAREN_MATH.sub(lambda m: f"${m.group(1).strip()}$", source)
    return sanitize_html(_md.render(source))


def render_markdown(text: str) -> SafeString:
    """Safe HTML for a turn's text. Cached: the same text renders once per process."""
    return mark_safe(_render(text or ""))  # noqa: S308  (sanitized by nh3 above)


_TOKEN = re.compile(r"\s+|[^\s]+")


def word_diff(before: str, after: str) -> SafeString:
    """`before` → `after` word by word, escaped, with `<del>`/`<ins>` around the changes."""
    a = _TOKEN.findall(before or "")
    b = _TOKEN.findall(after or "")
    parts: list[str] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            parts.append(escape("".join(a[i1:i2])))
            continue
        if op in ("delete", "replace"):
            parts.append(f"<del>{escape(''.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            parts.append(f"<ins>{escape(''.join(b[j1:j2]))}</ins>")
    return mark_safe("".join(parts))  # noqa: S308  (every piece is escaped)
