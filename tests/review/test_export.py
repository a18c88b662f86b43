"""Dataset export: formats, rules, only-approved data, PII, determinism, streaming, failures."""

from __future__ import annotations

import errno
import hashlib
import json
import threading
from pathlib import Path

import pytest
from django.db import connection

from generation.models import Side, Turn
from review import export, pii
from review.export import writer
from review.models import DatasetExport, DialogueReview, TurnRevision
from review.services import dialogue_approve, review_for, turn_correct
from tests.factories import (
    DialogueFactory,
    RunFactory,
    ScenarioFactory,
    TurnFactory,
    UserFactory,
    dialogue_with_turns,
)
from tests.review.test_pii import POSITIVE
from tests.tooling.openai_format import validate_example, validate_file

pytestmark = pytest.mark.django_db

APPROVED = DialogueReview.Status.APPROVED


def approved(n_turns: int = 4, **kwargs):
    dialogue = dialogue_with_turns(n_turns, **kwargs)
    DialogueReview.objects.create(dialogue=dialogue, status=APPROVED)
    return dialogue


def dialogue_of(sides_texts: list[tuple[str, str]], *, status: str | None = APPROVED, **kw):
    """A dialogue whose turns have the given sides and texts, in order."""
    dialogue = DialogueFactory(**kw)
    personas = {p.side: p for p in dialogue.scenario.personas.all()}
    for position, (side, text) in enumerate(sides_texts):
        TurnFactory(
            dialogue=dialogue,
            position=position,
            persona=personas[side],
            side=side,
            original_text=text,
            text=text,
        )
    if status:
        DialogueReview.objects.create(dialogue=dialogue, status=status)
    return dialogue


def run_export(tmp_path: Path, fmt: str = "openai", name: str = "out.jsonl", **kwargs):
    options = export.ExportOptions(
        fmt, kwargs.pop("include_system", True), kwargs.pop("scrub_pii", False)
    )
    result = export.export_write(
        filters=export.ExportFilters(**kwargs), options=options, path=tmp_path / name
    )
    return result, [json.loads(line) for line in result.path.read_text().splitlines()]


def test_openai_line_is_exact_bytes(tmp_path):
    dialogue = dialogue_of(
        [
            (Side.USER, 'Pourquoi "sin" ?\nJe ne sais pas.'),
            (Side.ASSISTANT, "Parce que sin(30°) = ½ — voilà."),
        ]
    )
    result, _ = run_export(tmp_path)
    expected = (
        '{"messages":[{"role":"system","content":"You are a patient maths teacher."},'
        '{"role":"user","content":"Pourquoi \\"sin\\" ?\\nJe ne sais pas."},'
        '{"role":"assistant","content":"Parce que sin(30°) = ½ — voilà."}]}\n'
    )
    data = result.path.read_bytes()
    assert data == expected.encode()
    # The same bytes json.dumps gives with the documented settings.
    assert data.decode() == (
        json.dumps(json.loads(expected), ensure_ascii=False, separators=(",", ":")) + "\n"
    )
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.manifest["per_scenario"] == {
        dialogue.scenario.slug: {"dialogues": 1, "records": 1}
    }


def test_only_approved_dialogues_are_written(tmp_path):
    run = RunFactory()
    keep = [approved(run=run) for _ in range(3)]
    pending = dialogue_with_turns(run=run)
    DialogueReview.objects.create(dialogue=dialogue_with_turns(run=run), status="rejected")
    DialogueReview.objects.create(dialogue=pending, status="pending")
    dialogue_with_turns(run=run)  # no review row at all: pending

    result, lines = run_export(tmp_path, run_ids=(run.pk,))

    assert len(lines) == 3
    texts = {m["content"] for line in lines for m in line["messages"]}
    expected = set(
        Turn.objects.filter(dialogue__in=keep).values_list("text", flat=True)
    )  # trailing user turns are dropped, so a subset
    assert texts - {"You are a patient maths teacher."} <= expected
    counts = result.manifest["counts"]
    assert counts["dialogues_selected"] == 6
    assert counts["dialogues_skipped_not_approved"] == 3
    assert counts["dialogues_written"] == 3


def test_corrected_text_and_never_discarded_turns(tmp_path):
    dialogue = dialogue_of([(Side.USER, "What is sin 30?"), (Side.ASSISTANT, "It is 2.")])
    answer = dialogue.turns.get(position=1)
    answer.text = "It is 1/2."
    answer.save()
    # A regeneration discarded an earlier version of turn 1 and wrote a new one.
    Turn.objects.filter(pk=answer.pk).update(discarded_at="2026-01-01T00:00:00Z")
    TurnFactory(
        dialogue=dialogue,
        position=1,
        persona=answer.persona,
        side=Side.ASSISTANT,
        original_text="One half.",
        text="One half, since the opposite side is half the hypotenuse.",
    )
    _, lines = run_export(tmp_path, include_system=False)
    assert lines == [
        {
            "messages": [
                {"role": "user", "content": "What is sin 30?"},
                {
                    "role": "assistant",
                    "content": "One half, since the opposite side is half the hypotenuse.",
                },
            ]
        }
    ]


def test_same_role_turns_merge_and_trailing_user_turns_drop(tmp_path):
    dialogue_of(
        [
            (Side.USER, "u1"),
            (Side.USER, "u2"),
            (Side.ASSISTANT, "a1"),
            (Side.ASSISTANT, "   "),
            (Side.ASSISTANT, "a2"),
            (Side.USER, "thanks"),
            (Side.USER, "bye"),
        ]
    )
    result, lines = run_export(tmp_path, include_system=False)
    assert lines[0]["messages"] == [
        {"role": "user", "content": "u1\n\nu2"},
        {"role": "assistant", "content": "a1\n\na2"},
    ]
    counts = result.manifest["counts"]
    assert counts["merged_turns"] == 3  # u2, a2, and "bye" before the trailing pair was dropped
    assert counts["dropped_trailing_user_turns"] == 1
    assert counts["skipped_blank_turns"] == 1


def test_dialogue_without_assistant_turn_is_skipped(tmp_path):
    dialogue_of([(Side.USER, "hello?"), (Side.ASSISTANT, " \n ")])
    keep = approved()
    result, lines = run_export(tmp_path)
    assert len(lines) == 1
    assert result.manifest["counts"]["dialogues_skipped_no_assistant_turn"] == 1
    assert result.manifest["counts"]["dialogues_written"] == 1
    assert keep.pk


def test_nothing_usable_raises_and_writes_no_file(tmp_path):
    dialogue_of([(Side.USER, "only a question")])
    with pytest.raises(export.EmptyExportError, match="an assistant turn"):
        run_export(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_no_approved_dialogue_raises(tmp_path):
    dialogue_with_turns()
    with pytest.raises(export.EmptyExportError, match="none of the 1 selected dialogues"):
        run_export(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_system_prompt_is_optional(tmp_path):
    approved()
    _, with_system = run_export(tmp_path, name="a.jsonl")
    _, without = run_export(tmp_path, name="b.jsonl", include_system=False)
    assert with_system[0]["messages"][0] == {
        "role": "system",
        "content": "You are a patient maths teacher.",
    }
    assert with_system[0]["messages"][1:] == without[0]["messages"]
    assert all(m["role"] != "system" for m in without[0]["messages"])


def test_sharegpt_roles(tmp_path):
    dialogue_of([(Side.USER, "q"), (Side.ASSISTANT, "a")])
    _, lines = run_export(tmp_path, "sharegpt")
    assert lines == [
        {
            "conversations": [
                {"from": "system", "value": "You are a patient maths teacher."},
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "a"},
            ]
        }
    ]


def test_dpo_pairs_come_from_the_revisions(tmp_path):
    reviewer = UserFactory(reviewer=True)
    dialogue = dialogue_of(
        [
            (Side.USER, "What is sin 30°?"),
            (Side.ASSISTANT, "sin 30° = 2"),
            (Side.USER, "And cos 60°?"),
            (Side.ASSISTANT, "cos 60° = 0.5"),
            (Side.USER, "And tan 45°?"),
            (Side.ASSISTANT, "tan 45° = 0"),
        ],
        status=None,
    )
    wrong, right, wrong_again = dialogue.turns.filter(side=Side.ASSISTANT).order_by("position")
    review_for(dialogue)
    for turn, texts in ((wrong, ["sin 30° = 1", "sin 30° = 1/2"]), (wrong_again, ["tan 45° = 1"])):
        for text in texts:
            turn.refresh_from_db()
            turn_correct(
                dialogue_id=dialogue.pk,
                turn_id=turn.pk,
                actor=reviewer,
                text=text,
                expected_version=turn.version,
            )
    dialogue_approve(
        dialogue_id=dialogue.pk,
        actor=reviewer,
        expected_version=DialogueReview.objects.get(dialogue=dialogue).version,
    )

    result, pairs = run_export(tmp_path, "dpo")

    assert len(pairs) == 2  # the uncorrected assistant turn gives no pair
    for pair, turn in zip(pairs, (wrong, wrong_again), strict=True):
        revisions = list(TurnRevision.objects.filter(turn=turn).order_by("created_at", "pk"))
        assert pair["rejected"] == [{"role": "assistant", "content": revisions[0].before}]
        assert pair["chosen"] == [{"role": "assistant", "content": revisions[-1].after}]
        assert revisions[0].before == Turn.objects.get(pk=turn.pk).original_text
        assert set(pair) == {"prompt", "chosen", "rejected"}
    # The prompt is everything before the turn, corrected, after the system prompt.
    assert pairs[1]["prompt"] == [
        {"role": "system", "content": "You are a patient maths teacher."},
        {"role": "user", "content": "What is sin 30°?"},
        {"role": "assistant", "content": "sin 30° = 1/2"},
        {"role": "user", "content": "And cos 60°?"},
        {"role": "assistant", "content": "cos 60° = 0.5"},
        {"role": "user", "content": "And tan 45°?"},
    ]
    assert result.manifest["counts"]["records"] == 2


@pytest.mark.parametrize("fmt", ["openai", "sharegpt", "dpo"])
def test_each_format_loads_with_hugging_face_datasets(tmp_path, fmt):
    from datasets import load_dataset

    for _ in range(3):
        dialogue = approved(n_turns=6)
        turn = dialogue.turns.filter(side=Side.ASSISTANT).first()
        turn.text = f"Corrected: {turn.text} ünïcödé ✓"
        turn.save()
    result, lines = run_export(tmp_path, fmt)
    dataset = load_dataset(
        "json", data_files=str(result.path), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert dataset.num_rows == len(lines) == 3
    assert dataset.to_list() == lines
    column = {"openai": "messages", "sharegpt": "conversations", "dpo": "chosen"}[fmt]
    assert column in dataset.column_names


def test_openai_export_passes_the_format_checks(tmp_path):
    for _ in range(10):
        approved(n_turns=5)
    dialogue_of([(Side.ASSISTANT, "Hello, shall we start?"), (Side.ASSISTANT, "Sine first.")])
    dialogue_of([(Side.USER, ""), (Side.ASSISTANT, "x"), (Side.USER, "y")])
    result, lines = run_export(tmp_path)
    assert len(lines) == 12
    assert validate_file(result.path, min_examples=10) == {}


@pytest.mark.parametrize(
    ("example", "error"),
    [
        ({"messages": [{"role": "user", "content": "q"}]}, "example_missing_assistant_message"),
        ({"messages": [{"role": "bot", "content": "a"}]}, "unrecognized_role"),
        ({"messages": [{"role": "assistant", "content": ""}]}, "missing_content"),
        ({"messages": [{"role": "assistant", "content": None}]}, "missing_content"),
        ({"messages": [{"role": "assistant"}]}, "message_missing_key"),
        (
            {"messages": [{"role": "assistant", "content": "a", "extra": 1}]},
            "message_unrecognized_key",
        ),
        ({"messages": [{"role": "assistant", "content": "a"}], "x": 1}, "unknown_example_keys"),
        ({"messages": []}, "missing_messages_list"),
        ([], "data_type"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]},
            "system_not_first",
        ),
    ],
)
def test_format_validator_rejects(example, error):
    assert error in validate_example(example)


def test_same_filters_give_the_same_bytes(tmp_path):
    for _ in range(5):
        approved(n_turns=6)
    first, _ = run_export(tmp_path, name="1.jsonl")
    second, _ = run_export(tmp_path, name="2.jsonl")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256 == first.manifest["sha256"]
    manifest = json.loads(export.manifest_path_for(first.path).read_text())
    assert manifest["sha256"] == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert manifest["synthreview_version"]


def test_pii_is_counted_without_scrubbing_and_replaced_with_it(tmp_path):
    dialogue_of(
        [
            (Side.USER, "Mail me at ada@example.org or call +44 20 7946 0958."),
            (Side.ASSISTANT, "I will not; my card 4111 1111 1111 1111 stays private."),
        ]
    )
    dialogue_of([(Side.USER, "pi is 3.14159, dated 2024-03-15"), (Side.ASSISTANT, "v1.2.3")])
    plain, plain_lines = run_export(tmp_path, name="plain.jsonl")
    assert plain.manifest["pii"] == {
        "scrubbed": False,
        "dialogues_with_pii": 1,
        "detected": {"EMAIL": 1, "CARD": 1, "IBAN": 0, "IP": 0, "PHONE": 1},
    }
    assert "ada@example.org" in plain_lines[0]["messages"][1]["content"]

    scrubbed, lines = run_export(tmp_path, name="scrubbed.jsonl", scrub_pii=True)
    assert scrubbed.manifest["pii"]["replacements"] == {
        "EMAIL": 1,
        "CARD": 1,
        "IBAN": 0,
        "IP": 0,
        "PHONE": 1,
    }
    assert lines[0]["messages"][1:] == [
        {"role": "user", "content": "Mail me at [EMAIL] or call [PHONE]."},
        {"role": "assistant", "content": "I will not; my card [CARD] stays private."},
    ]
    assert lines[1]["messages"][1]["content"] == "pi is 3.14159, dated 2024-03-15"


def test_pii_scrub_covers_dpo_originals(tmp_path):
    dialogue = dialogue_of([(Side.USER, "email?"), (Side.ASSISTANT, "It is bob@example.com")])
    Turn.objects.filter(dialogue=dialogue, position=1).update(text="I cannot share that.")
    result, pairs = run_export(tmp_path, "dpo", scrub_pii=True)
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "It is [EMAIL]"}]
    assert result.manifest["pii"]["replacements"]["EMAIL"] == 1


# A dotted phone number with a long middle group, and IPv4 at its shortest.
PII_EDGES = ["Call 0123.45678.90 now", "dns 8.8.8.8", "Phone 0123..4567890"]


@pytest.mark.parametrize("text", [text for text, _ in POSITIVE] + PII_EDGES)
def test_pii_gate_never_misses_what_pii_finds(text):
    """The export checks a whole dialogue with `pii.could_contain` before counting per text."""
    assert pii.find(text)
    assert pii.could_contain(text)
    assert pii.could_contain(f"Some words first.\n{text}\nThen more.")


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 0.70711, i.e. sqrt(2)/2.",
        "sin 30° = 1/2 and 12 + 34 = 46.",
        "So 37 + 2 = 44, about 0.69814.\nThe cosine of sixty degrees is 0.5.",
    ],
)
def test_pii_gate_lets_ordinary_maths_through(text):
    assert not pii.could_contain(text)


def test_lines_are_encoded_as_the_stdlib_would():
    """orjson writes the bytes of json.dumps(ensure_ascii=False, separators=(",", ":"))."""
    import orjson

    texts = ["".join(map(chr, range(start, start + 256))) for start in range(0, 0xD800, 256)]
    texts += ["\U0001f600\U0001d518\U0010fffd", "e\u0301\u2028\u2029\x7f"]
    for text in texts:
        data = {"messages": [{"role": "user", "content": text}]}
        expected = json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
        assert orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE) == expected.encode()


def test_query_count_does_not_grow_with_the_data(
    tmp_path, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(writer, "CHUNK_SIZE", 7)  # many fetches per export
    monkeypatch.setattr(writer, "PROGRESS_EVERY", 3)  # many blocks written
    approved()
    with django_assert_max_num_queries(6):
        run_export(tmp_path, name="small.jsonl")
    for _ in range(40):
        approved(n_turns=5)
    with django_assert_max_num_queries(6):
        result, lines = run_export(tmp_path, name="large.jsonl")
    assert len(lines) == 41


def test_rows_are_read_ahead_in_order_in_chunks(monkeypatch):
    monkeypatch.setattr(writer, "CHUNK_SIZE", 3)
    assert list(writer._read_ahead(iter(range(7)))) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(writer._read_ahead(iter(range(6)))) == [[0, 1, 2], [3, 4, 5]]
    assert list(writer._read_ahead(iter([]))) == []


def test_a_failed_read_ahead_fails_the_export(monkeypatch):
    monkeypatch.setattr(writer, "CHUNK_SIZE", 2)

    def rows():
        yield from range(3)
        raise OSError("connection lost")  # on the reading thread: the third row's chunk

    with pytest.raises(OSError, match="connection lost"):
        list(writer._read_ahead(rows()))


def test_write_failure_leaves_no_file_and_records_the_failure(tmp_path, monkeypatch, settings):
    settings.MEDIA_ROOT = str(tmp_path)
    for _ in range(3):
        approved()
    monkeypatch.setattr(writer, "PROGRESS_EVERY", 1)  # one block per dialogue
    calls = []

    def disk_full(self, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.file.write(data)

    monkeypatch.setattr(export.AtomicFile, "write", disk_full)
    record = export.dataset_export_create(
        options=export.ExportOptions("openai"), filters=export.ExportFilters()
    )
    with pytest.raises(OSError):
        export.dataset_export_run(export=record)
    record.refresh_from_db()
    assert record.status == DatasetExport.Status.FAILED
    assert "No space left on device" in record.error
    assert not record.file
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_unwritable_target_fails_cleanly(tmp_path):
    approved()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(OSError):
        export.export_write(
            filters=export.ExportFilters(),
            options=export.ExportOptions("openai"),
            path=blocker / "out.jsonl",
        )
    assert [p.name for p in tmp_path.iterdir()] == ["not-a-dir"]


def test_unknown_format_is_named():
    with pytest.raises(export.ExportError, match="'parquet'"):
        export.ExportOptions("parquet")


def test_filters_by_scenario_run_and_since(tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    old = approved()
    new = approved(run=RunFactory(scenario=ScenarioFactory(slug="fraud")))
    DialogueReview.objects.filter(dialogue=old).update(
        decided_at=timezone.now() - timedelta(days=10)
    )
    DialogueReview.objects.filter(dialogue=new).update(decided_at=timezone.now())
    assert len(run_export(tmp_path, name="s.jsonl", scenario="fraud")[1]) == 1
    assert len(run_export(tmp_path, name="r.jsonl", run_ids=(old.run_id,))[1]) == 1
    since = timezone.now() - timedelta(days=1)
    result, lines = run_export(tmp_path, name="d.jsonl", since=since)
    assert len(lines) == 1
    assert result.manifest["filters"] == {"since": since.isoformat()}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_export_reads_one_snapshot(tmp_path, monkeypatch):
    """Edits committed while an export runs land in the next export, not half in this one."""
    first = approved()
    late = dialogue_with_turns()
    turn = first.turns.get(position=0)
    original_prompts = writer._system_prompts

    def edit_concurrently(scenario_ids):
        prompts = original_prompts(scenario_ids)  # after the counts, before the turns

        def write():
            DialogueReview.objects.create(dialogue=late, status=APPROVED)
            Turn.objects.filter(pk=turn.pk).update(text="edited during the export")
            connection.close()

        thread = threading.Thread(target=write)
        thread.start()
        thread.join()
        return prompts

    monkeypatch.setattr(writer, "_system_prompts", edit_concurrently)
    # One row per fetch, so the read-ahead thread reads every row but the first: from the cursor
    # opened in this snapshot (on its own connection it would see the late approval).
    monkeypatch.setattr(writer, "CHUNK_SIZE", 1)
    result, lines = run_export(tmp_path, name="during.jsonl")
    assert len(lines) == 1 == result.manifest["counts"]["dialogues_approved"]
    assert "edited during the export" not in result.path.read_text()

    monkeypatch.setattr(writer, "_system_prompts", original_prompts)
    _, after = run_export(tmp_path, name="after.jsonl")
    assert len(after) == 2
    assert "edited during the export" in (tmp_path / "after.jsonl").read_text()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_progress_is_visible_to_other_connections_while_running(tmp_path, settings, monkeypatch):
    settings.MEDIA_ROOT = str(tmp_path)
    monkeypatch.setattr(writer, "PROGRESS_EVERY", 1)
    monkeypatch.setattr(writer, "CHUNK_SIZE", 1)
    for _ in range(3):
        approved()
    record = export.dataset_export_create(
        options=export.ExportOptions("openai"), filters=export.ExportFilters()
    )
    DatasetExport.objects.filter(pk=record.pk).update(status=DatasetExport.Status.RUNNING)
    seen = []

    def observe(done, total):
        def read():
            seen.append(DatasetExport.objects.get(pk=record.pk).progress_count)
            connection.close()

        thread = threading.Thread(target=read)
        thread.start()
        thread.join()

    export.dataset_export_run(export=record, progress=observe)
    assert seen[:3] == [1, 2, 3]
    record.refresh_from_db()
    assert record.status == DatasetExport.Status.DONE
    assert Path(record.file.path).read_bytes().count(b"\n") == 3


def test_failed_rename_leaves_neither_file(tmp_path, monkeypatch):
    approved()
    real_replace = writer.os.replace

    def replace(src, dst):
        if str(dst).endswith(".jsonl"):
            raise OSError(errno.EACCES, "Permission denied", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(writer.os, "replace", replace)
    with pytest.raises(OSError):
        run_export(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_manifest_breaks_down_per_scenario_and_model(tmp_path):
    fraud = ScenarioFactory(slug="fraud")
    for model in ("gpt-a", "gpt-b"):
        dialogue = approved(n_turns=4, run=RunFactory(scenario=fraud))
        Turn.objects.filter(dialogue=dialogue).update(model=model)
    mixed = approved(n_turns=4)
    Turn.objects.filter(dialogue=mixed, position=0).update(model="gpt-a")
    result, _ = run_export(tmp_path)
    assert result.manifest["per_scenario"] == {
        "fraud": {"dialogues": 2, "records": 2},
        mixed.scenario.slug: {"dialogues": 1, "records": 1},
    }
    assert result.manifest["per_model"] == {
        "gpt-a": {"assistant_turns": 3, "dialogues": 2},
        "gpt-b": {"assistant_turns": 2, "dialogues": 1},
        "unknown": {"assistant_turns": 1, "dialogues": 1},
    }


def test_skipped_dialogues_are_counted_by_why_they_are_not_approved(tmp_path):
    """Not approved is three different things: awaiting a reviewer, rejected, or never
    completed (failed, cancelled, still generating: nothing a reviewer could approve)."""
    from generation.models import Dialogue

    run = RunFactory()
    approved(run=run)
    dialogue_with_turns(run=run)  # complete, no review yet
    DialogueReview.objects.create(dialogue=dialogue_with_turns(run=run), status="pending")
    DialogueReview.objects.create(dialogue=dialogue_with_turns(run=run), status="rejected")
    for status in (Dialogue.Status.FAILED, Dialogue.Status.CANCELLED, Dialogue.Status.GENERATING):
        dialogue_with_turns(run=run, status=status)

    counts = export.selection_breakdown(export.ExportFilters(run_ids=(run.pk,)))
    assert counts == export.SelectionCounts(
        approved=1, awaiting_review=2, rejected=1, not_complete=3
    )
    assert export.selection_counts(export.ExportFilters(run_ids=(run.pk,))) == (1, 6)
    assert counts.skipped_summary() == (
        "6 skipped: 2 awaiting review, 1 rejected, "
        "3 not complete (failed, cancelled or still generating)"
    )
    result, _ = run_export(tmp_path, run_ids=(run.pk,))
    manifest_counts = result.manifest["counts"]
    assert manifest_counts["dialogues_selected"] == 7
    assert manifest_counts["dialogues_skipped_not_approved"] == 6
    assert manifest_counts["dialogues_skipped_awaiting_review"] == 2
    assert manifest_counts["dialogues_skipped_rejected"] == 1
    assert manifest_counts["dialogues_skipped_not_complete"] == 3
