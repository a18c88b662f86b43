"""Exports leave near-duplicates out by default and count them; an option keeps them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.urls import reverse

from review import duplicates, export
from review.export import manifest_path_for
from review.models import DatasetExport, DialogueReview
from tests.factories import RunFactory, dialogue_with_turns

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


def _approved(run, texts: list[str]):
    dialogue = dialogue_with_turns(len(texts), run=run)
    for turn, text in zip(dialogue.turns.order_by("position"), texts, strict=True):
        turn.text = turn.original_text = text
        turn.save()
    DialogueReview.objects.create(dialogue=dialogue, status="approved")
    duplicates.dialogue_check(dialogue_id=dialogue.pk)
    return dialogue


@pytest.fixture
def three(db):
    """Two approved dialogues with the same text (the second a near-duplicate) and another."""
    run = RunFactory()
    same = ["What is the sine of thirty degrees?", "It is one half, as the triangle shows."]
    original = _approved(run, same)
    copy = _approved(RunFactory(scenario=run.scenario), same)
    other = _approved(run, ["How do radians work?", "A full turn is two pi radians."])
    return original, copy, other


def test_selection_leaves_the_copy_out_and_counts_it(three):
    original, copy, other = three
    default = export.ExportFilters()
    assert set(export.dialogues_exportable(default).values_list("pk", flat=True)) == {
        original.pk,
        other.pk,
    }
    counts = export.selection_breakdown(default)
    assert (counts.approved, counts.near_duplicate, counts.skipped) == (2, 1, 1)
    assert counts.skipped_summary() == "1 skipped: 1 near-duplicate"
    kept = export.ExportFilters(include_near_duplicates=True)
    assert export.dialogues_exportable(kept).count() == 3
    assert export.selection_breakdown(kept).near_duplicate == 0
    assert export.ExportFilters.from_json(kept.as_json()) == kept
    assert default.as_json() == {}


def test_cli_excludes_by_default_and_the_manifest_counts_it(three, tmp_path):
    out = tmp_path / "train.jsonl"
    err = io.StringIO()
    call_command("export_dataset", "--format", "openai", "--output", str(out), stderr=err)
    assert len(out.read_text().splitlines()) == 2
    assert "1 skipped: 1 near-duplicate." in err.getvalue()
    manifest = json.loads(manifest_path_for(out).read_text())
    assert manifest["counts"]["dialogues_skipped_near_duplicate"] == 1
    assert manifest["options"]["include_near_duplicates"] is False
    assert DatasetExport.objects.get().skipped_count == 1

    call_command(
        "export_dataset", "--format", "openai", "--include-near-duplicates",
        "--output", str(out), stderr=io.StringIO(),
    )  # fmt: skip
    assert len(out.read_text().splitlines()) == 3
    manifest = json.loads(manifest_path_for(out).read_text())
    assert manifest["counts"]["dialogues_skipped_near_duplicate"] == 0
    assert manifest["filters"] == {"include_near_duplicates": True}


def test_cli_says_when_only_near_duplicates_are_selected(three, tmp_path):
    _, copy, _ = three
    with pytest.raises(CommandError, match="near-duplicates of earlier ones"):
        call_command(
            "export_dataset", "--format", "openai", "--run", str(copy.run_id), "--output",
            str(tmp_path / "x.jsonl"), stderr=io.StringIO(),
        )  # fmt: skip


def test_admin_action_offers_the_option(client, admin_user, three):
    client.force_login(admin_user)
    ids = [str(d.pk) for d in three]
    url = reverse("admin:generation_dialogue_changelist")
    data = {"action": "export_dialogues_action", ACTION_CHECKBOX_NAME: ids, "index": "0"}
    page = client.post(url, data).content.decode()
    assert "2 approved dialogues will be exported" in page
    assert "1 approved near-duplicate skipped unless included below" in page
    done = client.post(url, {**data, "apply": "1", "format": "openai"}, follow=True)
    assert "2 exported, 1 skipped: 0 not approved, 1 near-duplicate." in done.content.decode()
    client.post(url, {**data, "apply": "1", "format": "openai", "include_near_duplicates": "on"})
    default, included = DatasetExport.objects.order_by("pk")
    assert (default.exported_count, default.skipped_count) == (2, 1)
    assert (included.exported_count, included.skipped_count) == (3, 0)
