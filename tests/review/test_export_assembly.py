"""The PostgreSQL-assembled export path gives the same bytes as the per-turn path.

On PostgreSQL every format reads one row per dialogue with its texts concatenated behind
side markers (DPO: corrected assistant turns' originals too, and only dialogues that have one)
and builds whole blocks of lines with bytes passes (`review.export`, "PostgreSQL-assembled
dialogues"); everything unusual goes through `_DialogueWriter`. These
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


def _dialogue(turns, *, scenario=None, approved=True, positions=None, models=None, originals=None):
    """`originals` maps a turn's index to what the model first wrote (it was corrected)."""
    kwargs = {"run__scenario": scenario} if scenario is not None else {}
    dialogue = DialogueFactory(**kwargs)
    personas = {p.side: p for p in dialogue.scenario.personas.all()}
    for index, (side, text) in enumerate(turns):
        TurnFactory(
            dialogue=dialogue,
            position=positions[index] if positions else index,
            persona=personas[side],
            side=side,
            original_text=(originals or {}).get(index, text),
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
    _dialogue([(U, "Hello"), (A, "Hi")], scenario=pii_scenario, originals={1: "Hey"})
    _pairs_corpus()


def _pairs_corpus() -> None:
    """Corrections: what DPO writes, and every way a pair is skipped or unusual."""
    for n in (2, 3, 4, 5, 6):  # the last assistant turn corrected, trailing user turn or not
        last = n - 1 if n % 2 == 0 else n - 2
        _dialogue(
            [(U if i % 2 == 0 else A, f"Corrected turn {i} of {n}.") for i in range(n)],
            originals={last: f"Draft of turn {last} of {n}."},
        )
    for text in NASTY:
        # A nasty corrected text, then a nasty original (with a trailing user turn).
        _dialogue([(U, text), (A, text), (U, "Fine."), (A, "ok")], originals={1: "Old one."})
        _dialogue([(U, "Q?"), (A, "Answer"), (U, text)], originals={1: text})
    # The first turn corrected: the prompt is the system message alone, or there is no pair.
    _dialogue([(A, "Opening, corrected."), (U, "Then the user."), (A, "Fine")], originals={0: "x"})
    # Several corrected assistant turns.
    _dialogue(
        [(U, "One"), (A, "two"), (U, "three"), (A, "four"), (U, "five"), (A, "six")],
        originals={1: "draft two", 5: "draft six"},
    )
    # A corrected user turn only (no pair), and one beside a corrected assistant turn.
    _dialogue([(U, "User typo"), (A, "Answer")], originals={0: "User typoo"})
    _dialogue([(U, "User typo"), (A, "Answer"), (U, "more")], originals={0: "x", 1: "Answr"})
    # Reverted: the text is the original again, so not a correction.
    _dialogue([(U, "Reverted"), (A, "back to the original")], originals={1: "back to the original"})
    # Merged turns before and after the corrected one.
    _dialogue(
        [(U, "Twice"), (U, "in a row"), (A, "merged"), (A, "too"), (U, "end")],
        originals={2: "merged draft"},
    )
    # Blank corrections and blank originals, blank turns in the prompt.
    _dialogue([(U, "Q"), (A, "   ")], originals={1: "was not blank"})
    _dialogue([(U, "Q"), (A, "now written")], originals={1: "\u3000"})
    _dialogue([(U, "Q"), (A, ""), (U, "again"), (A, "answer")], originals={3: "draft"})
    # Markers in the original, a non-plain dialogue (gap, two models) with a correction.
    _dialogue([(U, "Q"), (A, "fine")], originals={1: "mark \x1c and \x1d and \x1e"})
    _dialogue(
        [(U, "Gap"), (A, "in"), (U, "positions"), (A, "here")],
        positions=[0, 1, 3, 4],
        originals={3: "there"},
    )
    _dialogue(
        [(U, "Two"), (A, "models"), (U, "answer"), (A, "here")],
        models=["m1", "m1", "", "m2"],
        originals={3: "there"},
    )
    # Personal data in the original only, in the prompt only, after the pair only, and a pair
    # that scrubbing makes equal (then skipped when scrubbing).
    for text, _ in POSITIVE[:6]:
        _dialogue([(U, "Q"), (A, "Removed.")], originals={1: f"Mine is {text}."})
        _dialogue([(U, f"Mine is {text}."), (A, "Noted.")], originals={1: "Noted!"})
        _dialogue([(U, "Q"), (A, "A."), (U, f"Mine is {text}.")], originals={1: "B."})
    _dialogue([(U, "Q"), (A, "Write to a@example.org")], originals={1: "Write to b@example.org"})
    # A corrected turn discarded by a regeneration gives no pair.
    regenerated = _dialogue([(U, "Kept"), (A, "kept answer")])
    Turn.objects.create(
        dialogue=regenerated,
        position=3,
        persona=regenerated.scenario.personas.get(side=A),
        side=A,
        text="discarded, corrected",
        original_text="discarded",
        discarded_at=timezone.now(),
    )
    _dialogue([(U, "Not approved"), (A, "corrected")], approved=False, originals={1: "c"})


def _export(tmp_path: Path, name: str, fmt: str, include_system: bool, scrub: bool):
    result = export.export_write(
        filters=export.ExportFilters(),
        options=export.ExportOptions(fmt, include_system, scrub),
        path=tmp_path / name,
    )
    return result.path.read_bytes(), result.manifest


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["openai", "sharegpt", "dpo"])
@pytest.mark.parametrize(("include_system", "scrub"), [(True, False), (False, True)])
# One dialogue per block (each escape on its own) and eight (blocks mixing every case).
@pytest.mark.parametrize("chunk_size", [5, 40])
def test_assembled_lines_are_the_per_turn_lines(
    tmp_path, monkeypatch, fmt, include_system, scrub, chunk_size
):
    _corpus()
    monkeypatch.setattr(export, "CHUNK_SIZE", chunk_size)
    calls = []
    plain = export._PlainPairs if fmt == "dpo" else export._PlainDialogues
    real_block = plain.block

    def spy(self, rows):
        calls.append(sum(1 for row in rows if row[2]))
        return real_block(self, rows)

    monkeypatch.setattr(plain, "block", spy)
    fast, fast_manifest = _export(tmp_path, "fast.jsonl", fmt, include_system, scrub)
    assert len(calls) > 1 and sum(calls) > 20  # the assembled path ran, on plain dialogues
    monkeypatch.setattr(export, "SQL_ASSEMBLY", False)
    slow, slow_manifest = _export(tmp_path, "slow.jsonl", fmt, include_system, scrub)
    assert fast.split(b"\n") == slow.split(b"\n")
    assert fast == slow
    for manifest in (fast_manifest, slow_manifest):
        manifest.pop("file")
    assert fast_manifest == slow_manifest
    counts = fast_manifest["counts"]
    if fmt == "dpo":
        assert counts["records"] > counts["dialogues_written"] > 20
        assert counts["dialogues_without_pairs"] > 0
    else:
        assert counts["merged_turns"] > 0
        assert counts["dropped_trailing_user_turns"] > 0
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


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["openai", "dpo"])
def test_texts_holding_marker_bytes_are_read_again(tmp_path, monkeypatch, fmt):
    """A marker byte inside a text would shift the boundaries between texts: the block's marker
    count gives it away, and only the dialogues holding one are read again as turns."""
    plain = [
        _dialogue([(U, f"Plain {n}"), (A, f"answer {n}")], originals={1: "x"}) for n in range(3)
    ]
    marked = _dialogue(
        [(U, "Q"), (A, "a \x1e inside"), (U, "and \x1f"), (A, "end")], originals={3: "e \x1c"}
    )
    reread = []
    real = export._exact_turns

    def spy(dialogue_ids, *, with_original):
        reread.extend(dialogue_ids)
        return real(dialogue_ids, with_original=with_original)

    monkeypatch.setattr(export, "_exact_turns", spy)
    fast, _ = _export(tmp_path, "fast.jsonl", fmt, True, False)
    assert reread == [marked.pk]
    monkeypatch.setattr(export, "SQL_ASSEMBLY", False)
    slow, _ = _export(tmp_path, "slow.jsonl", fmt, True, False)
    assert fast == slow
    assert len(fast.splitlines()) == len(plain) + 1
