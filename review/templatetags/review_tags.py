from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from generation.models import Turn
from review.permissions import is_reviewer
from review.rendering import render_markdown, word_diff

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    return render_markdown(text)


@register.simple_tag
def diff(before: str, after: str) -> SafeString:
    return word_diff(before, after)


@register.filter
def get_item(mapping: dict, key: str) -> object:
    return mapping.get(key, "")


_WARNING_LABELS = dict(Turn.Warning.choices)


@register.filter
def warning_label(code: str) -> str:
    """Readable name of a generation warning (unknown codes show as written)."""
    return _WARNING_LABELS.get(code, str(code).replace("_", " "))


@register.filter
def can_review(user: object) -> bool:
    """For navigation only; every review view enforces access on the server."""
    return is_reviewer(user)
