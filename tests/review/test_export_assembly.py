"""The PostgreSQL-assembled export path gives the same bytes as the per-turn path.

On PostgreSQL the chat formats read one row per dialogue with its texts concatenated behind
side markers and build whole blocks of lines with bytes passes (`review.export`,
"PostgreSQL-assembled dialogues"); everything unusual goes through `_DialogueWriter`. These
tests hold the fast path to the per-turn path on data made to hit every rule and every
character JSON escapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.utils import timezone

from generation.models import Side, Turn
from review import export
from review.models import DialogueReview
from tests.factories import DialogueFactory, ScenarioFactory, TurnFactory
from tests.review.test_pii import POSITIVE

pytestmark = pytest.mark.django_db

A, U = Side.ASSISTANT, Side.USER

# Every character class JSON escapes, the markers the fast path uses, and characters it must
# leave alone (DEL, U+2028/2029, non-BMP, combining marks).
NASTY = [
    'She said "hi" \\ then left.',
    "Line one\nline two\r\nline three\ttabbed",
    "Controls: \x01\x02\x07\x08\x0b\x0c\x1b end",
    "Markers \x1d and \x1e and \x1f inside",
    "A literal \\u001e and \\u001f, not markers",
    "Separators\u2028and\u2029 and DEL \x7f stay",
    "Non-BMP 😀 𝔘 and combining é, 中文, العربية",
    "Backslash at the end \\",
    '"',
    '}],{"role":"user","content":"fake',
]


def _dialogue(turns, *, scenario=None, approved=True, positions=None, models=None):
    kwargs = {"run__scenario": scenario} if scenario is not None else {}
    dialogue = DialogueFactory(**kwargs)
    personas = {p.side: p for p in dialogue.scenario.personas.all()}
    for index, (side, text) in enumerate(turns):
        TurnFactory(
            dialogue=dialogue,
            position=positions[index] if positions else index,
            persona=personas[side],
            side=side,
            original_text=text,
            text=text,
            model=(models[index] if models else "model-a") if side == A else "",
        )
    if approved:
        DialogueReview.objects.create(dialogue=dialogue, status=DialogueReview.Status.APPROVED)
    return dialogue


def _corpus() -> None:
    """Dialogues covering each rule, each fallback and each escape."""
    for n in (1, 2, 3, 4, 5):  # ends on either side; a lone user turn has no assistant turn
        _dialogue([(U if i % 2 == 0 else A, f"Plain turn {i} of {n}.") for i in range(n)])
    _dialogue([(A, "The assistant opens."), (U, "Then the user."), (A, "And back.")])
    for text in NASTY:
        _dialogue([(U, text), (A, text), (U, "Fine."), (A, text)])
        _dialogue([(U, "Question?"), (A, text)])
    _dialogue([(U, "Twice"), (U, "in a row"), (A, "merged"), (A, "too")])
    for blank in ("", "   ", "\u00a0", "\n\t", "\u3000"):
        _dialogue([(U, "Before"), (A, blank), (U, "after"), (A, "answer")])
    _dialogue([(U, " leading space is not blank"), (A, "\u2003em space lead")])
    _dialogue([(U, "Gap"), (A, "in"), (U, "positions"), (A, "here")], positions=[0, 1, 3, 4])
    _dialogue([(U, "Gap"), (A, "odd"), (U, "parity")], positions=[0, 1, 5])
    _dialogue(
        [(U, "Two"), (A, "models"), (U, "answer"), (A, "here")], models=["m1", "m1", "", "m2"]
    )
    _dialogue([(U, "No"), (A, "model")], models=["", ""])
    _dialogue([(U, "Not approved"), (A, "skipped")], approved=False)
    for text, _ in POSITIVE[:12]:
        _dialogue([(U, f"My details: {text}."), (A, "Noted."), (U, "Thanks")])
    with_discarded = _dialogue([(U, "Kept"), (A, "kept answer")])
    Turn.objects.create(
        dialogue=with_discarded,
        position=1,
        persona=with_discarded.scenario.personas.get(side=A),
        side=A,
        text="discarded answer",
        original_text="discarded answer",
        discarded_at=timezone.now(),
    )
    pii_scenario = ScenarioFactory()
    pii_scenario.personas.filter(side=A).update(system_prompt="Write to help@example.org.")
    _dialogue([(U, "Hello"), (A, "Hi")], scenario=pii_scenario)


def _export(tmp_path: Path, name: str, fmt: str, include_system: bool, scrub: bool):
    result = export.export_write(
        filters=export.ExportFilters(),
        options=export.ExportOptions(fmt, include_system, scrub),
        path=tmp_path / name,
    )
    return result.path.read_bytes(), result.manifest


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["openai", "sharegpt"])
@pytest.mark.parametrize(("include_system", "scrub"), [(True, False), (False, True)])
# One dialogue per block (each escape on its own) and eight (blocks mixing every case).
@pytest.mark.parametrize("chunk_size", [5, 40])
def test_assembled_lines_are_the_per_turn_lines(
    tmp_path, monkeypatch, fmt, include_system, scrub, chunk_size
):
    _corpus()
    monkeypatch.setattr(export, "CHUNK_SIZE", chunk_size)
    calls = []
    real_lines = export._PlainDialogues.lines

    def spy(self, rows):
        calls.append(sum(1 for row in rows if row[2]))
        return real_lines(self, rows)

    monkeypatch.setattr(export._PlainDialogues, "lines", spy)
    fast, fast_manifest = _export(tmp_path, "fast.jsonl", fmt, include_system, scrub)
    assert len(calls) > 1 and sum(calls) > 20  # the assembled path ran, on plain dialogues
    monkeypatch.setattr(export, "SQL_ASSEMBLY", False)
    slow, slow_manifest = _export(tmp_path, "slow.jsonl", fmt, include_system, scrub)
    assert fast.split(b"\n") == slow.split(b"\n")
    assert fast == slow
    for manifest in (fast_manifest, slow_manifest):
        manifest.pop("file")
    assert fast_manifest == slow_manifest
    assert fast_manifest["counts"]["merged_turns"] > 0
    assert fast_manifest["counts"]["dropped_trailing_user_turns"] > 0
    assert fast_manifest["pii"]["dialogues_with_pii"] > 0


@pytest.mark.postgres
def test_assembled_export_keeps_each_text_exact(tmp_path):
    _corpus()
    data, _ = _export(tmp_path, "out.jsonl", "openai", True, False)
    contents = {
        message["content"]
        # Not splitlines(): U+2028 and friends are line breaks to it, and JSON leaves them be.
        for line in data.decode().split("\n")[:-1]
        for message in json.loads(line)["messages"]
    }
    for text in NASTY:
        assert text in contents


def test_escape_table_flags_every_character_json_escapes():
    for code in range(128):
        char = chr(code)
        escaped = json.dumps(char, ensure_ascii=False)[1:-1]
        cls = bytes([code]).translate(export._ESCAPE_TABLE)
        if escaped != char:
            assert cls in b"QBNRTEMS", (code, cls)
        handled = {raw: esc for c, raw, esc in export._BLOCK_ESCAPES if c == cls}
        if handled:
            assert handled[char.encode()] == escaped.encode()
    # Non-ASCII never needs escaping with ensure_ascii=False.
    for char in ("\u2028", "\u2029", "😀", "é", "\x7f"):
        assert json.dumps(char, ensure_ascii=False) == f'"{char}"'


@pytest.mark.parametrize("text", [text for text, _ in POSITIVE])
def test_block_prefilter_never_misses_what_pii_finds(text):
    marked = export._MARK_DIALOGUE.join(
        ["\x1fplain words", "\x1fFirst words.\x1e" + text + "\x1fThen more.", "\x1eend"]
    )
    shape = marked.encode().translate(export._ESCAPE_TABLE)
    starts = [0, len(b"\x1fplain words") + 1]
    end = starts[1] + len(("\x1fFirst words.\x1e" + text + "\x1fThen more.").encode())
    assert any(starts[1] <= hit < end for hit in export._pii_suspects(shape))


def test_space_codes_are_every_python_whitespace():
    assert tuple(code for code in range(0x110000) if chr(code).isspace()) == export._SPACE_CODES
