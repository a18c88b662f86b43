"""`manage.py export_dataset`: files, stdout, the export record, and errors naming the input."""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from review.export import manifest_path_for
from review.management.commands.export_dataset import _ProgressBar
from review.models import DatasetExport, DialogueReview
from tests.factories import RunFactory, ScenarioFactory, dialogue_with_turns
from tests.tooling.openai_format import validate_file

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


def approved(**kwargs):
    dialogue = dialogue_with_turns(4, **kwargs)
    DialogueReview.objects.create(dialogue=dialogue, status="approved")
    return dialogue


def export_cmd(*args: str) -> str:
    err = io.StringIO()
    call_command("export_dataset", *args, stdout=io.StringIO(), stderr=err)
    return err.getvalue()


def test_exports_to_a_file_and_rereads_the_jsonl(tmp_path, media):
    run = RunFactory()
    for _ in range(3):
        approved(run=run)
    dialogue_with_turns(run=run)  # pending: skipped
    out = tmp_path / "train.jsonl"

    message = export_cmd("--format", "openai", "--run", str(run.pk), "--output", str(out))

    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3
    assert all(line["messages"][-1]["role"] == "assistant" for line in lines)
    assert validate_file(out) == {}
    assert "Exported 3 dialogues" in message
    assert "1 skipped: 1 awaiting review." in message
    manifest = json.loads(manifest_path_for(out).read_text())
    assert manifest["counts"]["records"] == 3
    assert manifest["filters"] == {"run_ids": [run.pk]}

    record = DatasetExport.objects.get()
    assert record.source == DatasetExport.Source.CLI
    assert record.status == DatasetExport.Status.DONE
    assert record.output_path == str(out)
    assert record.requested_by == getpass.getuser()
    assert record.exported_count == 3 and record.skipped_count == 1
    assert record.sha256 == manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert record.manifest == manifest
    # Written once, where asked: no copy under MEDIA_ROOT, nothing for the admin to serve.
    assert not record.file
    assert not [path for path in media.rglob("*") if path.is_file()]
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == [
        "train.jsonl",
        "train.manifest.json",
    ]


def test_exports_to_stdout(capfdbinary, media):
    approved()
    call_command("export_dataset", "--format", "sharegpt", "--no-system", "--output", "-")
    out = capfdbinary.readouterr().out
    line = json.loads(out.decode())
    assert [m["from"] for m in line["conversations"]] == ["gpt", "human", "gpt"]
    record = DatasetExport.objects.get()
    assert record.output_path == "-" and record.status == DatasetExport.Status.DONE
    assert record.sha256 == hashlib.sha256(out).hexdigest()
    assert record.manifest["file"] == "-"
    assert not record.file
    assert not media.exists() or not [path for path in media.rglob("*") if path.is_file()]


def test_scenario_and_scrub_options(tmp_path):
    fraud = approved(run=RunFactory(scenario=ScenarioFactory(slug="fraud")))
    approved()
    answer = fraud.turns.get(position=2)
    answer.text = "Call the bank on +44 20 7946 0958 instead."
    answer.save()
    out = tmp_path / "fraud.jsonl"
    export_cmd("--format", "dpo", "--scenario", "fraud", "--scrub-pii", "--output", str(out))
    (pair,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert pair["chosen"] == [{"role": "assistant", "content": "Call the bank on [PHONE] instead."}]
    assert pair["rejected"] == [{"role": "assistant", "content": answer.original_text}]
    manifest = json.loads(manifest_path_for(out).read_text())
    assert manifest["pii"]["replacements"]["PHONE"] == 1
    assert manifest["filters"] == {"scenario": "fraud"}


def test_no_pairs_is_an_error_recorded_as_failed(tmp_path):
    approved()
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(CommandError, match="corrected assistant turn"):
        export_cmd("--format", "dpo", "--output", str(out))
    assert DatasetExport.objects.get().status == DatasetExport.Status.FAILED
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "parquet"], "Unknown format 'parquet'"),
        (["--format", "openai", "--run", "999999"], "Unknown run: 999999"),
        (["--format", "openai", "--scenario", "nope"], "Unknown scenario: 'nope'"),
        (["--format", "openai", "--since", "last tuesday"], "Invalid date 'last tuesday'"),
    ],
)
def test_bad_input_is_named(tmp_path, args, message):
    approved()
    out = tmp_path / "x.jsonl"
    with pytest.raises(CommandError, match=message):
        export_cmd(*args, "--output", str(out))
    assert not out.exists()
    assert not DatasetExport.objects.exists()


def test_empty_selection_gives_a_message_and_no_file(tmp_path):
    dialogue_with_turns()
    out = tmp_path / "x.jsonl"
    with pytest.raises(CommandError, match="none of the 1 selected dialogues is approved"):
        export_cmd("--format", "openai", "--output", str(out))
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]
    assert not DatasetExport.objects.exists()


def test_unwritable_output_fails_before_exporting(tmp_path):
    approved()
    with pytest.raises(CommandError, match="does not exist"):
        export_cmd("--format", "openai", "--output", str(tmp_path / "missing" / "x.jsonl"))
    with pytest.raises(CommandError, match="is a directory"):
        export_cmd("--format", "openai", "--output", str(tmp_path))
    assert not DatasetExport.objects.exists()


def test_since_filters_on_approval_date(tmp_path):
    from django.utils import timezone

    dialogue = approved()
    DialogueReview.objects.filter(dialogue=dialogue).update(decided_at=timezone.now())
    approved()  # approved without a date: before any --since
    out = tmp_path / "since.jsonl"
    export_cmd("--format", "openai", "--since", "2000-01-01", "--output", str(out))
    assert len(out.read_text().splitlines()) == 1


def test_progress_bar_draws_in_place():
    stream = io.StringIO()
    bar = _ProgressBar(stream, width=10)
    bar(5, 10)
    bar(10, 10)
    bar.close()
    assert stream.getvalue() == (
        "\r[#####.....]  50% 5/10 dialogues\r[##########] 100% 10/10 dialogues\n"
    )


def test_exit_status_is_non_zero_on_error():
    env = {**os.environ, "SECRET_KEY": "x"}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "export_dataset", "--format", "csv", "--output", "-"],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Unknown format 'csv'" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("failing", ["write", "rename"])
def test_a_failed_write_to_output_leaves_no_files(tmp_path, media, monkeypatch, failing):
    from review.export import writer

    approved()
    if failing == "write":

        def write(self, data):
            raise OSError(28, "No space left on device", str(self.path))

        monkeypatch.setattr(writer.AtomicFile, "write", write)
    else:
        real_replace = writer.os.replace

        def replace(source, target):
            if str(target).endswith(".jsonl"):
                raise OSError(28, "No space left on device", str(target))
            real_replace(source, target)

        monkeypatch.setattr(writer.os, "replace", replace)
    out = tmp_path / "out" / "train.jsonl"
    out.parent.mkdir()
    with pytest.raises(CommandError, match="No space left on device"):
        export_cmd("--format", "openai", "--output", str(out))
    assert list(out.parent.iterdir()) == []
    assert not [path for path in media.rglob("*") if path.is_file()]
    record = DatasetExport.objects.get()
    assert record.status == DatasetExport.Status.FAILED and not record.file


def test_message_says_why_dialogues_were_skipped(tmp_path):
    from generation.models import Dialogue

    run = RunFactory()
    approved(run=run)
    DialogueReview.objects.create(dialogue=dialogue_with_turns(run=run), status="rejected")
    dialogue_with_turns(run=run, status=Dialogue.Status.CANCELLED)
    dialogue_with_turns(run=run, status=Dialogue.Status.FAILED)
    message = export_cmd("--format", "openai", "--output", str(tmp_path / "out.jsonl"))
    assert (
        "3 skipped: 1 rejected, 2 not complete (failed, cancelled or still generating)." in message
    )
