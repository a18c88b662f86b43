"""Scenario variables: definitions, sampling with the run's seed (weighted, balanced,
over-sampled), what the personas see, admin validation, the launch form and the command."""

from __future__ import annotations

import re
from collections import Counter
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from generation import services, variables
from generation.engine import loop
from generation.models import Dialogue, GenerationRun, Persona
from tests.factories import ScenarioFactory
from tests.generation.test_admin import ADD_URL, assert_rejected, scenario_post

LEVEL = variables.Variable("level", ("beginner", "advanced"), (3.0, 1.0))
MOOD = variables.Variable("mood", ("calm", "angry", "sad"), (1.0, 1.0, 1.0))


def test_lines_parse_and_come_back():
    text = "level: beginner*3 | advanced\nmood: calm | angry | sad"
    assert variables.parse(text) == [LEVEL, MOOD]
    assert variables.unparse([LEVEL, MOOD]) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("level beginner | advanced", "Line 1: write `name: value | value | value`."),
        ("Level: a | b", "'Level' is not a variable name"),
        ("topic: a | b", "{topic} is a built-in placeholder already"),
        ("a: x | y\na: x | z", "Line 2: variable 'a' is defined twice"),
        ("a: only", "give a at least two values"),
        ("a: x | | y", "a has an empty value"),
        ("a: x*0 | y", "the weight of 'x' must be above 0"),
        ("a: x | x", "a lists 'x' twice"),
    ],
)
def test_bad_definitions_say_what_is_wrong(text, message):
    with pytest.raises(variables.VariableError, match=message.replace("|", r"\|")):
        variables.parse(text)


def test_sampling_follows_the_weights_and_the_seed():
    first = variables.sample([LEVEL, MOOD], count=4000, seed=5)
    assert first == variables.sample([LEVEL, MOOD], count=4000, seed=5)
    assert first != variables.sample([LEVEL, MOOD], count=4000, seed=6)
    levels = Counter(values["level"] for values in first)
    assert 2850 < levels["beginner"] < 3150  # 3:1 of 4000 is 3000
    assert variables.sample([], count=2, seed=1) == [{}, {}]


def test_balanced_coverage_gives_every_combination_equally_often():
    picks = variables.sample([LEVEL, MOOD], count=12, seed=1, balanced=True)
    assert set(Counter(tuple(p.values()) for p in picks).values()) == {2}  # 6 combinations
    uneven = Counter(tuple(p.values()) for p in variables.sample([LEVEL, MOOD], count=8, seed=1, balanced=True))  # fmt: skip
    assert len(uneven) == 6 and set(uneven.values()) <= {1, 2}


def test_oversampling_multiplies_a_value_s_share():
    balanced = variables.sample(
        [LEVEL], count=40, seed=2, balanced=True, oversample={"level": {"advanced": 3}}
    )
    assert Counter(p["level"] for p in balanced) == {"advanced": 30, "beginner": 10}
    weighted = variables.sample(
        [LEVEL], count=6000, seed=2, oversample={"level": {"advanced": 3}}
    )  # weights 3 and 1 * 3: even
    assert 2800 < Counter(p["level"] for p in weighted)["advanced"] < 3200


def test_oversample_requests_are_checked_against_the_scenario():
    parse = variables.parse_oversample
    assert parse("level = advanced * 4, mood=sad*2", [LEVEL, MOOD]) == {
        "level": {"advanced": 4},
        "mood": {"sad": 2},
    }
    with pytest.raises(variables.VariableError, match="Unknown variable 'tone'"):
        parse("tone = calm * 2", [LEVEL])
    with pytest.raises(variables.VariableError, match="level has no value 'expert'"):
        parse("level = expert * 2", [LEVEL])
    with pytest.raises(variables.VariableError, match="write `variable = value \\* factor`"):
        parse("level = advanced", [LEVEL])
    with pytest.raises(variables.VariableError, match="from 2 to 100"):
        parse("level = advanced * 1", [LEVEL])


@pytest.fixture
def scenario(db):
    scenario = ScenarioFactory(
        opening_instruction="As a {level} student, ask about {topic}.",
        variables=[LEVEL.as_json(), MOOD.as_json()],
    )
    Persona.objects.filter(scenario=scenario, position=0).update(
        system_prompt="Teach {topic} to a {level} student who is {mood}; {{no}} placeholder."
    )
    return scenario


def test_launch_records_each_dialogue_s_values_and_the_personas_see_them(scenario):
    run = services.run_launch(scenario=scenario, count=6, seed=3, variable_coverage="balanced")
    chosen = list(run.dialogues.order_by("index").values_list("variables", flat=True))
    assert chosen == variables.sample([LEVEL, MOOD], count=6, seed=3, balanced=True)
    assert Counter((v["level"], v["mood"]) for v in chosen) == Counter(
        {(level, mood): 1 for level in LEVEL.values for mood in MOOD.values}
    )
    dialogue = run.dialogues.order_by("index").first()
    _, personas, _ = loop.dialogue_load(dialogue_id=dialogue.pk)
    cast = loop._cast(dialogue, personas)
    level, mood = dialogue.variables["level"], dialogue.variables["mood"]
    assert cast.opening == f"As a {level} student, ask about {dialogue.topic}."
    assert cast.prompts[0] == (
        f"Teach {dialogue.topic} to a {level} student who is {mood}; {{no}} placeholder."
    )


def test_a_dialogue_with_a_value_missing_fails_with_the_reason(scenario):
    dialogue = Dialogue.objects.create(
        run=GenerationRun.objects.create(scenario=scenario, requested_count=1, provider="demo"),
        scenario=scenario,
        index=0,
        topic="angles",
        variables={"level": "beginner"},
    )
    _, personas, _ = loop.dialogue_load(dialogue_id=dialogue.pk)
    assert loop._cast(dialogue, personas) == (
        "Bad system prompt template of Teacher: 'mood' (write {{ and }} for literal braces)"
    )


def test_admin_takes_variables_and_their_placeholders(admin_client):
    data = scenario_post(
        variables="level: beginner*2 | advanced",
        opening_instruction="As a {level} student ask {partner} about {topic}.",
        **{"personas-0-system_prompt": "Teach a {level} student."},
    )
    response = admin_client.post(ADD_URL, data)
    assert response.status_code == 302
    scenario = ScenarioFactory._meta.model.objects.get(slug="geometry")
    assert scenario.variables == [
        {"name": "level", "values": ["beginner", "advanced"], "weights": [2.0, 1.0]}
    ]
    page = admin_client.get(reverse("admin:generation_scenario_change", args=[scenario.pk]))
    assert "level: beginner*2 | advanced" in page.content.decode()


def test_admin_refuses_unknown_placeholders_and_bad_variables(admin_client):
    response = admin_client.post(
        ADD_URL, scenario_post(variables="level: a | b", opening_instruction="A {levle} one.")
    )
    assert_rejected(response, "opening_instruction", "Unknown placeholder {levle}. Use {topic}")
    assert "{level}" in " ".join(response.context["adminform"].form.errors["opening_instruction"])
    response = admin_client.post(
        ADD_URL, scenario_post(**{"personas-1-system_prompt": "You are {mood}."})
    )
    assert_rejected(response, "system_prompt", "Unknown placeholder {mood}", persona=1)
    assert "or define it as a scenario variable" in response.content.decode()
    response = admin_client.post(ADD_URL, scenario_post(variables="level: only one"))
    assert_rejected(response, "variables", "give level at least two values")


def test_launch_form_balances_and_oversamples(admin_client, scenario):
    url = reverse("admin:generation_generationrun_add")
    base = {"scenario": scenario.pk, "count": "4", "max_in_flight": "2", "seed": "1"}
    response = admin_client.post(url, {**base, "oversample": "level = expert * 2"})
    assert "level has no value 'expert'" in response.context["form"].errors["oversample"][0]
    response = admin_client.post(
        url, {**base, "variable_coverage": "balanced", "oversample": "mood = sad * 3"}
    )
    run = GenerationRun.objects.get()
    assert response.status_code == 302
    assert (run.variable_coverage, run.oversample) == ("balanced", {"mood": {"sad": 3}})
    plain = ScenarioFactory(slug="plain")
    response = admin_client.post(url, {**base, "scenario": plain.pk, "variable_coverage": "balanced"})  # fmt: skip
    assert "has no variables to balance" in response.content.decode()


def test_generate_command_options(scenario):
    call_command(
        "generate", "--scenario", scenario.slug, "--count", "12", "--balanced",
        "--oversample", "level=advanced*2", "--seed", "4", stdout=StringIO(),
    )  # fmt: skip
    run = GenerationRun.objects.get()
    levels = Counter(run.dialogues.values_list("variables__level", flat=True))
    assert levels == {"advanced": 8, "beginner": 4}  # 2 * 3 moods vs 1 * 3 per cycle
    with pytest.raises(CommandError, match="Unknown variable 'tone'"):
        call_command("generate", "--scenario", scenario.slug, "--count", "1", "--oversample",
                     "tone=x*2", stdout=StringIO())  # fmt: skip


def test_queue_filters_by_a_variable_value_and_review_next_follows(client, reviewer, scenario):
    from review import services as review_services
    from review.forms import QueueFilterForm

    run = services.run_launch(scenario=scenario, count=6, seed=3, variable_coverage="balanced")
    run.dialogues.update(status=Dialogue.Status.COMPLETE)
    wanted = set(run.dialogues.filter(variables__level="advanced").values_list("pk", flat=True))
    assert len(wanted) == 3
    client.force_login(reviewer)
    page = client.get(reverse("review:queue"), {"variable": "level=advanced"}).content.decode()
    shown = {
        int(pk) for pk in re.findall(r'class="row-link" href="/review/dialogues/(\d+)/"', page)
    }
    assert shown == wanted
    assert 'value="level=advanced"' in page
    filters = QueueFilterForm({"variable": " level = advanced "}).filters()
    assert filters.variable == ("level", "advanced")
    claimed = review_services.review_claim_next(actor=reviewer, filters=filters)
    assert claimed.pk in wanted
    assert QueueFilterForm({"variable": "no equals sign"}).filters().variable is None
