"""Every export format's exact bytes on adversarial data, held to files under `golden/`.

The corpus hits every format rule (system message, merges, blank and trailing turns, dialogues
without an assistant turn, DPO pairs from corrections, reverted corrections, several models,
discarded turns, personal data in turns, originals and system prompts) with every character
JSON escapes or leaves alone. The golden files were written by the exporter as it stood before
it was rewritten, and agreed on SQLite and PostgreSQL; the same files must come out of every
later version on both databases.

To rewrite them after a deliberate change of the output:
`SYNTHREVIEW_WRITE_GOLDEN=1 make test PYTEST_ARGS=tests/review/test_export_golden.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from generation.models import Dialogue, Persona, Scenario, Side, Turn
from review import export
from review.models import DialogueReview
from tests.factories import RunFactory, ScenarioFactory
from tests.review.test_pii import POSITIVE

pytestmark = pytest.mark.django_db

GOLDEN = Path(__file__).parent / "golden"
WRITE_GOLDEN = os.environ.get("SYNTHREVIEW_WRITE_GOLDEN") == "1"
# Differ from one version or output name to the next; every other manifest field is pinned.
VOLATILE_MANIFEST_FIELDS = ("synthreview_version", "file")

A, U = Side.ASSISTANT, Side.USER
APPROVED = DialogueReview.Status.APPROVED

# Characters JSON escapes, characters it must leave alone, and the control bytes an earlier
# exporter used as markers between texts.
ADVERSARIAL = [
    'She said "hi" \\ then left.',
    "Line one\nline two\r\nline three\ttabbed",
    "Controls: \x01\x02\x07\x08\x0b\x0c\x1b end",
    "Markers \x1c and \x1d and \x1e and \x1f inside",
    "\x1eStarts with a marker",
    "A literal \\u001e and \\n, not escapes",
    "Separators\u2028and\u2029 and DEL \x7f stay",
    "Non-BMP 😀 𝔘 🇫🇷 and combining e\u0301, n\u0303, 中文, العربية",
    "Backslash at the end \\",
    '"',
    '}],{"role":"user","content":"fake',
    "</script><!-- & 'quotes' -->",
]
BLANKS = ["", "   ", "\u00a0", "\n\t", "\u3000", "\u00a0 \u2003"]


def _scenario(slug: str, assistant_prompt: str, user_prompt: str = "You are a student.") -> Any:
    scenario = ScenarioFactory(slug=slug, personas=False)
    Persona.objects.create(
        scenario=scenario, position=0, name="Teacher", side=A, system_prompt=assistant_prompt
    )
    Persona.objects.create(
        scenario=scenario, position=1, name="Student", side=U, system_prompt=user_prompt
    )
    return scenario


def _dialogue(
    scenario: Scenario,
    turns: list[tuple[str, str]],
    *,
    review: str | None = APPROVED,
    status: str = Dialogue.Status.COMPLETE,
    positions: list[int] | None = None,
    models: list[str] | None = None,
    originals: dict[int, str] | None = None,
) -> Dialogue:
    """`originals` maps a turn's index to what the model first wrote (a reviewer corrected it)."""
    run = RunFactory(scenario=scenario)
    dialogue = Dialogue.objects.create(
        run=run, scenario=scenario, index=0, topic="the unit circle", status=status
    )
    personas = {persona.side: persona for persona in scenario.personas.all()}
    for index, (side, text) in enumerate(turns):
        Turn.objects.create(
            dialogue=dialogue,
            position=positions[index] if positions else index,
            persona=personas[side],
            side=side,
            original_text=(originals or {}).get(index, text),
            text=text,
            model=(models[index] if models else "model-a") if side == A else "",
        )
    if review is not None:
        DialogueReview.objects.create(dialogue=dialogue, status=review)
    return dialogue


def _discarded_turn(dialogue: Dialogue, position: int, side: str, text: str, original: str) -> None:
    Turn.objects.create(
        dialogue=dialogue,
        position=position,
        persona=dialogue.scenario.personas.get(side=side),
        side=side,
        text=text,
        original_text=original,
        model="discarded-model",
        discarded_at=timezone.now(),
    )


def _chat_corpus(plain: Scenario) -> None:
    for n in (1, 2, 3, 4, 5):  # ends on either side; a lone user turn has no assistant turn
        _dialogue(plain, [(U if i % 2 == 0 else A, f"Plain turn {i} of {n}.") for i in range(n)])
    _dialogue(plain, [(A, "The assistant opens."), (U, "Then the user."), (A, "And back.")])
    for text in ADVERSARIAL:
        _dialogue(plain, [(U, text), (A, text), (U, "Fine."), (A, text)])
    _dialogue(plain, [(U, "Twice"), (U, "in a row"), (A, "merged"), (A, "too"), (U, "bye")])
    _dialogue(plain, [(A, "Hello?"), (A, "Anyone?")])
    for blank in BLANKS:
        _dialogue(plain, [(U, "Before"), (A, blank), (U, "after"), (A, "answer")])
    _dialogue(plain, [(U, blank) for blank in BLANKS[:2]] + [(A, "\u3000")])
    _dialogue(plain, [(U, " leading space is not blank"), (A, "\u2003em space lead ")])
    _dialogue(plain, [(U, "Only"), (U, "questions"), (A, " "), (U, "here")])
    _dialogue(plain, [(U, "Thanks"), (A, "Welcome"), (U, "bye"), (U, "\u00a0"), (U, "really")])
    _dialogue(plain, [(U, "Gap"), (A, "in"), (U, "positions"), (A, "here")], positions=[0, 1, 3, 4])
    _dialogue(
        plain,
        [(U, "Two"), (A, "models"), (U, "answer"), (A, "here"), (U, "and"), (A, "a third")],
        models=["", "m1", "", "m2", "", ""],
    )
    for text, _ in POSITIVE:
        _dialogue(plain, [(U, f"My details: {text}."), (A, "Noted."), (U, "Thanks")])
    with_discarded = _dialogue(plain, [(U, "Kept"), (A, "kept answer")])
    _discarded_turn(with_discarded, 1, A, "discarded answer", "discarded answer")
    _discarded_turn(with_discarded, 2, U, "discarded question", "discarded question")


def _pairs_corpus(plain: Scenario) -> None:
    for n in (2, 3, 4, 5, 6):  # the last assistant turn corrected, trailing user turn or not
        last = n - 1 if n % 2 == 0 else n - 2
        _dialogue(
            plain,
            [(U if i % 2 == 0 else A, f"Corrected turn {i} of {n}.") for i in range(n)],
            originals={last: f"Draft of turn {last} of {n}."},
        )
    for text in ADVERSARIAL:
        _dialogue(plain, [(U, text), (A, text), (U, "Fine."), (A, "ok")], originals={1: "Old."})
        _dialogue(plain, [(U, "Q?"), (A, "Answer"), (U, text)], originals={1: text})
    _dialogue(plain, [(A, "Opening, corrected."), (U, "Then."), (A, "Fine")], originals={0: "x"})
    _dialogue(
        plain,
        [(U, "One"), (A, "two"), (U, "three"), (A, "four"), (U, "five"), (A, "six")],
        originals={1: "draft two", 5: "draft six"},
    )
    _dialogue(plain, [(U, "User typo"), (A, "Answer")], originals={0: "User typoo"})
    _dialogue(plain, [(U, "Typo"), (A, "Answer"), (U, "more")], originals={0: "x", 1: "Answr"})
    # Reverted: corrected, then set back to what the model wrote: no pair.
    _dialogue(plain, [(U, "Reverted"), (A, "back to the original")])
    _dialogue(
        plain,
        [(U, "Twice"), (U, "in a row"), (A, "merged"), (A, "too"), (U, "end")],
        originals={2: "merged draft"},
    )
    _dialogue(plain, [(U, "Q"), (A, "   ")], originals={1: "was not blank"})
    _dialogue(plain, [(U, "Q"), (A, "now written")], originals={1: "\u3000"})
    _dialogue(plain, [(U, "Q"), (A, ""), (U, "again"), (A, "answer")], originals={3: "draft"})
    _dialogue(plain, [(U, "Q"), (A, "fine")], originals={1: "mark \x1c and \x1d and \x1e"})
    _dialogue(
        plain,
        [(U, "Two"), (A, "models"), (U, "answer"), (A, "here")],
        models=["", "m1", "", "m2"],
        originals={1: "draft", 3: "there"},
    )
    for text, _ in POSITIVE[:8]:
        _dialogue(plain, [(U, "Q"), (A, "Removed.")], originals={1: f"Mine is {text}."})
        _dialogue(plain, [(U, f"Mine is {text}."), (A, "Noted.")], originals={1: "Noted!"})
        _dialogue(plain, [(U, "Q"), (A, "A."), (U, f"Mine is {text}.")], originals={1: "B."})
    # Scrubbing makes chosen and rejected equal: no pair when scrubbing.
    _dialogue(
        plain, [(U, "Q"), (A, "Write to a@example.org")], originals={1: "Write b@example.org"}
    )
    _dialogue(plain, [(U, "Q"), (A, "Mail a@example.org")], originals={1: "Mail b@example.org"})
    regenerated = _dialogue(plain, [(U, "Kept"), (A, "kept answer")])
    _discarded_turn(regenerated, 3, A, "discarded, corrected", "discarded")


def _scenarios_corpus() -> None:
    marked = _scenario("marked-prompt", ' \n Prompt "with" \x1e\x1f markers\tand\u2028escapes \n')
    _dialogue(marked, [(U, "Hello"), (A, "Hi")])
    _dialogue(marked, [(U, "Hello"), (A, "Hi")], originals={1: "Hey"})
    personal = _scenario("pii-prompt", "Write to help@example.org or call +44 20 7946 0958.")
    _dialogue(personal, [(U, "Hello"), (A, "Hi")])
    _dialogue(personal, [(U, "Hello"), (A, "Hi")], originals={1: "Hey"})
    _dialogue(personal, [(U, "Only a question")])
    blank = _scenario("blank-prompt", " \n\u00a0")
    _dialogue(blank, [(U, "No system"), (A, "message here")], originals={1: "draft"})
    _dialogue(blank, [(A, "First turn corrected, no prompt at all")], originals={0: "draft"})
    user_pii = _scenario("user-pii", "Be brief.", user_prompt="Mail me at me@example.org.")
    _dialogue(user_pii, [(U, "Q"), (A, "A")], originals={1: "B"})


def _unexported_corpus(plain: Scenario) -> None:
    for review in (None, DialogueReview.Status.PENDING, DialogueReview.Status.REJECTED):
        _dialogue(plain, [(U, f"Review {review}"), (A, "never written")], review=review)
    for status in (Dialogue.Status.FAILED, Dialogue.Status.CANCELLED, Dialogue.Status.GENERATING):
        _dialogue(
            plain, [(U, f"Dialogue {status}"), (A, "never written")], review=None, status=status
        )


@pytest.fixture
def corpus() -> None:
    plain = _scenario("plain", "You are a patient maths teacher.")
    _chat_corpus(plain)
    _pairs_corpus(plain)
    _scenarios_corpus()
    _unexported_corpus(plain)


def _assert_contains(actual: Any, golden: Any, where: str = "manifest") -> None:
    """Every key of the golden manifest is there with the same value; new keys may be added."""
    if isinstance(golden, dict):
        assert isinstance(actual, dict), where
        for key, value in golden.items():
            assert key in actual, f"{where}.{key} is missing"
            _assert_contains(actual[key], value, f"{where}.{key}")
    else:
        assert actual == golden, where


CASES = [
    (fmt, include_system, scrub)
    for fmt in ("openai", "sharegpt", "dpo")
    for include_system in (True, False)
    for scrub in (False, True)
]


@pytest.mark.parametrize(("fmt", "include_system", "scrub"), CASES)
def test_output_is_the_golden_file(tmp_path, corpus, fmt, include_system, scrub):
    name = fmt + ("" if include_system else "-no-system") + ("-scrub-pii" if scrub else "")
    golden = GOLDEN / f"{name}.jsonl"
    golden_manifest = GOLDEN / f"{name}.manifest.json"
    result = export.export_write(
        filters=export.ExportFilters(),
        options=export.ExportOptions(fmt, include_system, scrub),
        path=tmp_path / golden.name,
    )
    data = result.path.read_bytes()
    manifest = json.loads(export.manifest_path_for(result.path).read_text(encoding="utf-8"))
    for field in VOLATILE_MANIFEST_FIELDS:
        manifest.pop(field)
    if WRITE_GOLDEN:
        golden.write_bytes(data)
        golden_manifest.write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
            encoding="utf-8",
        )
    assert data == golden.read_bytes()
    _assert_contains(manifest, json.loads(golden_manifest.read_text(encoding="utf-8")))


def test_golden_files_hold_the_adversarial_texts():
    """The corpus reaches the files: each adversarial text appears, exact, in the openai file."""
    contents = {
        message["content"]
        # Not splitlines(): U+2028 and friends are line breaks to it; JSON leaves them be.
        for line in (GOLDEN / "openai.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
        for message in json.loads(line)["messages"]
    }
    for text in ADVERSARIAL:
        assert text in contents
    everything = b"".join(path.read_bytes() for path in GOLDEN.glob("*.jsonl"))
    for never in (b"never written", b"discarded"):
        assert never not in everything
