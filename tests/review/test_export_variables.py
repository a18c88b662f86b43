"""The exported system message is the prompt the assistant persona was given: its template
filled with each dialogue's topic and scenario variables."""

from __future__ import annotations

import json

import pytest

from generation.models import Persona
from review import export
from review.models import DialogueReview
from tests.factories import RunFactory, ScenarioFactory, dialogue_with_turns

pytestmark = pytest.mark.django_db


def test_system_message_is_rendered_per_dialogue(tmp_path):
    scenario = ScenarioFactory(variables=[{"name": "level", "values": ["new", "old"]}])
    Persona.objects.filter(scenario=scenario, side="assistant").update(
        system_prompt="Teach {topic} to a {level} student, {partner}. Braces: {{x}}."
    )
    run = RunFactory(scenario=scenario)
    for level in ("new", "old"):
        dialogue = dialogue_with_turns(2, run=run, variables={"level": level})
        DialogueReview.objects.create(dialogue=dialogue, status="approved")
    result = export.export_write(
        filters=export.ExportFilters(),
        options=export.ExportOptions("openai"),
        path=tmp_path / "out.jsonl",
    )
    systems = [
        json.loads(line)["messages"][0]["content"] for line in result.path.read_text().splitlines()
    ]
    assert systems == [
        "Teach the unit circle to a new student, Student. Braces: {x}.",
        "Teach the unit circle to a old student, Student. Braces: {x}.",
    ]
