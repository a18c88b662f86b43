from __future__ import annotations

from review.rendering import render_markdown, sanitize_html, word_diff


def test_markdown_and_maths():
    html = render_markdown(
        "**Identity**: $\\sin^2 x + \\cos^2 x = 1$\n\n$$\\tan x = \\frac{a}{b}$$"
    )
    assert "<strong>Identity</strong>" in html
    assert '<span class="math inline">\\sin^2 x + \\cos^2 x = 1</span>' in html
    assert '<div class="math block">' in html and "\\frac{a}{b}" in html


def test_backslash_paren_delimiters_become_maths():
    html = render_markdown("So \\(a^2 + b^2 = c^2\\) holds, and \\[x = 1\\]")
    assert '<span class="math inline">a^2 + b^2 = c^2</span>' in html
    assert '<div class="math block">' in html


def test_money_is_not_maths():
    html = render_markdown("The card was charged $5 and then $10 twice.")
    assert "math" not in html
    assert "$5 and then $10" in html


def test_raw_html_and_scripts_are_text():
    html = render_markdown("<script>alert(1)</script> <b onclick=x>hi</b>")
    assert "<script" not in html and "<b" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_dangerous_links_and_attributes_are_stripped():
    html = render_markdown(
        "[click](javascript:alert(1)) [ok](https://example.org) "
        '<a hx-get="/x" onerror="y">z</a> ![i](javascript:alert(2))'
    )
    assert 'href="javascript' not in html and "<a" in html
    assert 'href="https://example.org"' in html and 'rel="noopener noreferrer nofollow"' in html
    assert "<a hx-get" not in html and "<img" not in html


def test_sanitizer_strips_htmx_event_handlers_styles_and_scripts():
    # Defence in depth: even if HTML reached the sanitizer, none of this survives.
    html = sanitize_html(
        '<a href="javascript:alert(1)" hx-get="/x" hx-trigger="load" onclick="y">a</a>'
        '<span class="math inline evil" style="color:red" onmouseover="z">m</span>'
        "<img src=x onerror=alert(1)><script>alert(2)</script><style>p{}</style>"
        '<iframe src="https://example.org"></iframe><div hx-post="/review/next/">d</div>'
    )
    for needle in (
        "javascript:",
        "hx-",
        "onclick",
        "onmouseover",
        "onerror",
        "style",
        "<script",
        "<img",
        "<iframe",
        "evil",
        "alert(2)",
    ):
        assert needle not in html, needle
    assert '<span class="math inline">m</span>' in html


def test_maths_content_is_escaped():
    html = render_markdown("$a<b$ and $\\text{<img src=x onerror=alert(1)>}$")
    assert "<img" not in html
    assert "a&lt;b" in html


def test_word_diff_escapes_and_marks_changes():
    html = word_diff("sin x is <b>2</b>", "sin x is 1 <i>")
    assert "<del>&lt;b&gt;2&lt;/b&gt;</del>" in html
    assert "<ins>1 &lt;i&gt;</ins>" in html
    assert html.startswith("sin x is ")


def test_word_diff_of_identical_text_has_no_marks():
    assert word_diff("same text", "same text") == "same text"


def test_single_newlines_in_a_turn_are_line_breaks():
    assert str(render_markdown("Step 1\nStep 2")) == "<p>Step 1<br>\nStep 2</p>\n"
