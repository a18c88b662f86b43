"""The judge: reading its answers, a pass through the fake OpenAI server (structured output,
re-ask, faults), the usage it adds to the run, and the demo provider's scripted judge."""

from __future__ import annotations

from decimal import Decimal

import pytest

from generation import services as generation_services
from generation.models import GenerationRun
from review.judge.parsing import MalformedOutput, parse_marks
from review.models import JudgeConfig, Judgement, Suggestion
from review.services import dialogue_judge
from review.services.judging import judgement_claim, judgement_record
from tests.factories import dialogue_with_turns
from tests.generation.conftest import fake_openai, openai_provider  # noqa: F401  (fixtures)
from tests.tooling.fake_openai import FakeOpenAI

ALL = ["factual", "reasoning", "off_topic", "role_break", "unsafe", "tone", "other"]


def parse(text: str, **kwargs):
    options = {"turn_count": 4, "categories": ALL, "severity_max": 3, **kwargs}
    return parse_marks(text, **options)


class TestParsing:
    def test_plain_answer(self):
        parsed = parse('{"marks": [{"turn": 2, "category": "factual", "severity": 3, '
                       '"rationale": "sin 30 is 1/2"}]}')  # fmt: skip
        assert [(m.turn, m.category, m.severity, m.rationale) for m in parsed.marks] == [
            (2, "factual", 3, "sin 30 is 1/2")
        ]
        assert (parsed.dropped_turns, parsed.dropped_categories, parsed.dropped_malformed) == (
            0, 0, 0,
        )  # fmt: skip

    def test_tolerates_fences_prose_labels_and_strings(self):
        text = (
            'Sure! Here you go:\n```json\n[{"turn": "3", "category": "Reasoning error", '
            '"severity": 2.0, "rationale": "wrong step"}, {"turn": 1, "category": '
            '"off-topic", "severity": 9}]\n```'
        )
        parsed = parse(text)
        assert [(m.turn, m.category, m.severity) for m in parsed.marks] == [
            (1, "off_topic", 3),  # severity moved to the scale's top
            (3, "reasoning", 2),
        ]

    def test_unknown_turns_categories_and_broken_marks_are_dropped_and_counted(self):
        text = (
            '{"marks": [{"turn": 0, "category": "factual", "severity": 1},'
            '{"turn": 5, "category": "factual", "severity": 1},'
            '{"turn": 1, "category": "spelling", "severity": 1},'
            '{"turn": 1, "category": "tone", "severity": 1},'
            '{"turn": "one", "category": "factual", "severity": 1}, "nonsense",'
            '{"turn": 2, "category": "factual", "severity": 1, "rationale": "a"},'
            '{"turn": 2, "category": "factual", "severity": 2, "rationale": "b"}]}'
        )
        parsed = parse(text, categories=["factual", "reasoning"])
        assert parsed.dropped_turns == 2
        assert parsed.dropped_categories == 2  # unknown, and known but not allowed
        assert parsed.dropped_malformed == 2
        assert [(m.turn, m.severity, m.rationale) for m in parsed.marks] == [(2, 2, "b")]

    @pytest.mark.parametrize(
        "text", ["", "I found no problems.", '{"marks": [{"turn": 1,', '{"verdict": "ok"}', "42"]
    )
    def test_unreadable_answers_raise(self, text):
        with pytest.raises(MalformedOutput):
            parse(text)


MARKS = [
    {"turn": 2, "category": "factual", "severity": 3, "rationale": "The values are swapped."},
    {"turn": 4, "category": "reasoning", "severity": 1, "rationale": "Skips a step."},
]


@pytest.fixture
def judged(db, openai_provider, settings):  # noqa: F811
    settings.SYNTHREVIEW_LLM_MAX_RETRIES = 2
    settings.SYNTHREVIEW_MODEL_PRICES = {"judge-model": (1000.0, 2000.0)}
    openai_provider.configure(judge_marks=MARKS)
    dialogue = dialogue_with_turns(4, run__provider="openai")
    JudgeConfig.objects.create(
        scenario=dialogue.scenario, model="judge-model", rubric="Check the maths.",
        categories=["factual", "reasoning"], severity_max=3,
    )  # fmt: skip
    return dialogue


def suggestions_of(dialogue) -> list[tuple[int, str, int]]:
    return sorted(
        Suggestion.objects.filter(turn__dialogue=dialogue).values_list(
            "turn__position", "category", "severity"
        )
    )


@pytest.mark.django_db
class TestJudgePass:
    def test_valid_answer_becomes_suggestions_and_usage(self, judged, fake_openai):  # noqa: F811
        judgement = dialogue_judge(dialogue_id=judged.pk)
        assert judgement.status == Judgement.Status.DONE
        assert suggestions_of(judged) == [(1, "factual", 3), (3, "reasoning", 1)]
        assert judgement.mark_count == 2 and judgement.dropped == 0 and judgement.calls == 1
        request = fake_openai.state.payloads[-1]
        schema = request["response_format"]["json_schema"]
        assert schema["name"] == "turn_marks"
        assert schema["schema"]["properties"]["marks"]["items"]["properties"]["category"][
            "enum"
        ] == ["factual", "reasoning"]
        assert "Turn 4 (" in request["messages"][1]["content"]
        # The fake counts words: the run's totals grow by exactly the judge's usage.
        run = GenerationRun.objects.get(pk=judged.run_id)
        assert run.prompt_tokens == judgement.prompt_tokens > 0
        assert run.completion_tokens == judgement.completion_tokens > 0
        expected = (judgement.prompt_tokens * 1000 + judgement.completion_tokens * 2000) / 1e6
        assert run.cost_usd == judgement.cost_usd == Decimal(f"{expected:.6f}")

    def test_a_second_delivery_does_nothing(self, judged, fake_openai):  # noqa: F811
        dialogue_judge(dialogue_id=judged.pk)
        assert dialogue_judge(dialogue_id=judged.pk) is None
        assert fake_openai.state.judge_requests == 1
        assert len(suggestions_of(judged)) == 2

    def test_unknown_turns_and_categories_are_dropped_and_counted(self, judged, fake_openai):  # noqa: F811
        fake_openai.configure(judge_script=["unknown_turns"])
        judgement = dialogue_judge(dialogue_id=judged.pk)
        assert judgement.status == Judgement.Status.DONE
        assert (judgement.dropped_turns, judgement.dropped_categories) == (2, 1)
        assert suggestions_of(judged) == [(1, "factual", 3), (3, "reasoning", 1)]

    def test_fenced_answer_is_read(self, judged, fake_openai):  # noqa: F811
        fake_openai.configure(judge_script=["fenced"])
        assert dialogue_judge(dialogue_id=judged.pk).status == Judgement.Status.DONE
        assert len(suggestions_of(judged)) == 2

    def test_malformed_json_is_asked_again_once(self, judged, fake_openai):  # noqa: F811
        fake_openai.configure(judge_script=["malformed", "valid"])
        judgement = dialogue_judge(dialogue_id=judged.pk)
        assert judgement.status == Judgement.Status.DONE and judgement.calls == 2
        reask = fake_openai.state.payloads[-1]["messages"]
        assert reask[-2]["role"] == "assistant" and "could not be read" in reask[-1]["content"]
        assert len(suggestions_of(judged)) == 2

    def test_malformed_twice_records_the_failure(self, judged, fake_openai):  # noqa: F811
        fake_openai.configure(judge_script=["malformed", "malformed"])
        judgement = dialogue_judge(dialogue_id=judged.pk)
        assert judgement.status == Judgement.Status.FAILED
        assert judgement.error.startswith("judge failed: unreadable answer after one re-ask")
        assert suggestions_of(judged) == []
        # The two answers were paid for.
        assert GenerationRun.objects.get(pk=judged.run_id).prompt_tokens > 0

    def test_rate_limits_are_retried(self, judged, fake_openai):  # noqa: F811
        fake_openai.configure(judge_script=["429", "429", "valid"])
        judgement = dialogue_judge(dialogue_id=judged.pk)
        assert judgement.status == Judgement.Status.DONE
        assert fake_openai.state.judge_requests == 3

    def test_timeouts_past_the_retries_record_the_failure(self, judged, fake_openai, settings):  # noqa: F811
        settings.SYNTHREVIEW_LLM_TIMEOUT = 0.3
        fake_openai.configure(slow_seconds=1.0, judge_script=["slow", "slow", "slow"])
        judgement = dialogue_judge(dialogue_id=judged.pk)
        assert judgement.status == Judgement.Status.FAILED
        assert judgement.error.startswith("judge failed: gave up after 3 attempts: timed out")

    def test_a_server_refusing_structured_output_is_asked_without_it(self, judged, fake_openai):  # noqa: F811
        fake_openai.configure(judge_script=["refuse_schema", "malformed", "valid"])
        judgement = dialogue_judge(dialogue_id=judged.pk)
        assert judgement.status == Judgement.Status.DONE and judgement.calls == 3
        later = fake_openai.state.payloads[-2:]
        assert all("response_format" not in payload for payload in later)

    def test_a_pass_over_an_older_transcript_stores_nothing(self, judged, fake_openai):  # noqa: F811
        from review.judge.asking import JudgeAnswer
        from review.judge.parsing import Mark, ParsedMarks

        claimed = judgement_claim(dialogue_id=judged.pk)
        turn = judged.turns.get(position=3)
        turn.version += 1  # a regeneration or correction happened meanwhile
        turn.save()
        newer = judgement_claim(dialogue_id=judged.pk)
        assert newer is not None and newer.transcript != claimed.transcript
        answer = JudgeAnswer(parsed=ParsedMarks(marks=[Mark(1, "factual", 1, "x")]))
        assert judgement_record(claimed=claimed, answer=answer) is None
        assert suggestions_of(judged) == []

    def test_decided_suggestions_are_not_suggested_again(self, judged, fake_openai, reviewer):  # noqa: F811
        from review.services import suggestion_dismiss

        dialogue_judge(dialogue_id=judged.pk)
        first = Suggestion.objects.get(turn__position=1)
        suggestion_dismiss(dialogue_id=judged.pk, turn_id=first.turn_id,
                           suggestion_id=first.pk, actor=reviewer)  # fmt: skip
        Judgement.objects.filter(pk=judged.pk).update(transcript="older")
        dialogue_judge(dialogue_id=judged.pk)
        assert sorted(
            Suggestion.objects.filter(turn__dialogue=judged).values_list(
                "turn__position", "decisions__status"
            )
        ) == [(1, "dismissed"), (3, None)]

    def test_an_internal_error_is_recorded_not_left_running(self, judged, fake_openai):  # noqa: F811
        from unittest import mock

        from review.services import judging

        boom = RuntimeError("gate unreachable")
        with (
            mock.patch.object(judging, "judge_ask", side_effect=boom),
            pytest.raises(RuntimeError),
        ):
            dialogue_judge(dialogue_id=judged.pk)
        judgement = Judgement.objects.get(pk=judged.pk)
        assert judgement.status == Judgement.Status.FAILED
        assert judgement.error == "judge failed: internal error: RuntimeError('gate unreachable')"

    def test_no_judge_no_pass(self, judged, fake_openai):  # noqa: F811
        JudgeConfig.objects.filter(scenario=judged.scenario).update(enabled=False)
        assert dialogue_judge(dialogue_id=judged.pk) is None
        assert fake_openai.state.judge_requests == 0


@pytest.mark.django_db
def test_demo_runs_are_judged_by_the_scripted_judge(settings, django_capture_on_commit_callbacks):
    """Completing a dialogue sends it to the judge (here inline); the demo judge marks the
    scripts' mistakes it knows and the correct turns it wrongly suspects."""
    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    scenario = next(
        s for s in generation_services.scenario_upsert_examples() if s.slug == "card-fraud-report"
    )
    JudgeConfig.objects.create(scenario=scenario, rubric="Check it.")
    with django_capture_on_commit_callbacks(execute=True):
        run = generation_services.run_launch(scenario=scenario, count=6, seed=0)
    judgements = Judgement.objects.filter(dialogue__run=run)
    assert judgements.count() == 6
    assert set(judgements.values_list("status", flat=True)) == {"done"}
    suggestions = Suggestion.objects.filter(turn__dialogue__run=run).select_related("turn")
    assert {s.category for s in suggestions} == {"unsafe", "factual", "tone"}
    for suggestion in suggestions:
        if suggestion.category == "unsafe":
            assert "security code" in suggestion.turn.text
        elif suggestion.category == "factual":
            assert "can't be refunded" in suggestion.turn.text
        else:
            assert "never ask for your PIN" in suggestion.turn.text  # the wrong mark
    run.refresh_from_db()
    assert run.prompt_tokens > sum(d.turns.count() for d in run.dialogues.all())


@pytest.mark.django_db(transaction=True)
def test_seed_demo_leaves_judged_dialogues():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("seed_demo", "--dialogues", "6", stdout=out)
    assert JudgeConfig.objects.count() == 3
    complete = GenerationRun.objects.values_list("dialogues", flat=True)
    judgements = Judgement.objects.filter(dialogue__in=complete)
    assert judgements.count() == 18 and set(judgements.values_list("status", flat=True)) == {"done"}
    assert "the judge suggested" in out.getvalue()
    # Right marks (a scripted mistake) and wrong ones (a correct turn) are both there.
    texts = set(Suggestion.objects.values_list("turn__text", flat=True))
    assert any("three-digit security code" in t or "sine is always" in t for t in texts)
    assert any("never ask for your PIN" in t or "30-60-90" in t or "6 g a day" in t for t in texts)


def test_the_admin_sets_up_a_judge(admin_client):
    from django.urls import reverse

    from generation.models import Endpoint
    from tests.factories import ScenarioFactory

    scenario = ScenarioFactory()
    judges = Endpoint.objects.create(name="judges", base_url="http://judge-host:8000/v1")
    add = reverse("admin:review_judgeconfig_add")
    form = admin_client.get(add).content.decode()
    assert "You check synthetic training dialogues" in form
    assert 'option value="judges"' not in form and ">judges</option>" in form
    response = admin_client.post(add, {
        "scenario": scenario.pk, "enabled": "on", "endpoint": judges.pk, "model": "",
        "rubric": "Check the maths.", "categories": ["factual", "reasoning"], "severity_max": "4",
    })  # fmt: skip
    assert response.status_code == 302
    config = JudgeConfig.objects.get(scenario=scenario)
    assert config.allowed_categories() == ["factual", "reasoning"] and config.severity_max == 4
    assert config.endpoint == judges
    assert admin_client.get(reverse("admin:review_judgement_changelist")).status_code == 200


@pytest.mark.django_db
def test_a_regenerated_dialogue_is_judged_again(
    settings, reviewer, django_capture_on_commit_callbacks
):
    """After "Regenerate from here" the new turns are judged: the old marks on the discarded
    turns stay with them (out of the review), the live turns get the new pass's marks."""
    from review.services import dialogue_regenerate

    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    scenario = next(
        s for s in generation_services.scenario_upsert_examples() if s.slug == "card-fraud-report"
    )
    JudgeConfig.objects.create(scenario=scenario, rubric="Check it.")
    with django_capture_on_commit_callbacks(execute=True):
        run = generation_services.run_launch(scenario=scenario, count=1, seed=0)
    dialogue = run.dialogues.get()
    before = Judgement.objects.get(pk=dialogue.pk).transcript
    first = dialogue.turns.get(position=0)
    with django_capture_on_commit_callbacks(execute=True):
        discarded = dialogue_regenerate(dialogue_id=dialogue.pk, turn_id=first.pk, actor=reviewer)
    assert discarded > 0
    judgement = Judgement.objects.get(pk=dialogue.pk)
    assert judgement.status == "done" and judgement.transcript != before
    live = Suggestion.objects.filter(turn__dialogue=dialogue, turn__discarded_at__isnull=True)
    for suggestion in live.select_related("turn"):
        assert suggestion.created_at >= judgement.started_at
    assert judgement.mark_count == live.count()


JUDGE_KEY = "SYNTHREVIEW_TEST_JUDGE_KEY_NOT_SET"


@pytest.mark.django_db
def test_the_judge_calls_its_own_endpoint_with_its_model(judged, fake_openai, settings):  # noqa: F811
    """The personas' server (the default endpoint) sees no judge call; the judge's endpoint
    gets it with the endpoint's default model, and the run counts its usage."""
    from generation.models import Endpoint

    settings.SYNTHREVIEW_MODEL_PRICES = {"judge-default": (1000.0, 2000.0)}
    with FakeOpenAI(latency=0.0) as judge_server:
        judge_server.configure(judge_marks=MARKS)
        judges = Endpoint.objects.create(
            name="judges", base_url=judge_server.url, default_model="judge-default"
        )
        JudgeConfig.objects.filter(scenario=judged.scenario).update(endpoint=judges, model="")
        judgement = dialogue_judge(dialogue_id=judged.pk)
        assert judgement.status == Judgement.Status.DONE and judgement.mark_count == 2
        assert fake_openai.state.judge_requests == 0 and fake_openai.state.payloads == []
        assert [p["model"] for p in judge_server.state.payloads] == ["judge-default"]
    assert judgement.model == "judge-default"
    run = GenerationRun.objects.get(pk=judged.run_id)
    assert run.prompt_tokens == judgement.prompt_tokens > 0
    expected = (judgement.prompt_tokens * 1000 + judgement.completion_tokens * 2000) / 1e6
    assert run.cost_usd == judgement.cost_usd == Decimal(f"{expected:.6f}")


@pytest.fixture
def judge_on_a_keyless_endpoint(db, monkeypatch, settings):
    """A scenario whose personas call the demo provider and whose judge needs a key not set."""
    from generation.models import Endpoint
    from tests.factories import ScenarioFactory

    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    monkeypatch.delenv(JUDGE_KEY, raising=False)
    paid = Endpoint.objects.create(
        name="paid-judge", base_url="https://llm.example.org/v1", api_key_env=JUDGE_KEY,
        default_model="big-judge", requests_per_minute=500,
    )  # fmt: skip
    scenario = ScenarioFactory(name="Judged trig")
    JudgeConfig.objects.create(scenario=scenario, endpoint=paid, rubric="Check it.")
    return scenario


def test_a_judge_missing_its_key_is_refused_at_launch(judge_on_a_keyless_endpoint):
    scenario = judge_on_a_keyless_endpoint
    message = f"Endpoint 'paid-judge' \\(called by Judge\\) needs .* variable {JUDGE_KEY}"
    with pytest.raises(generation_services.EndpointNotReady, match=message):
        generation_services.run_launch(scenario=scenario, count=2)
    assert not GenerationRun.objects.exists()
    # A disabled judge calls nothing: the run starts on the demo provider.
    JudgeConfig.objects.filter(scenario=scenario).update(enabled=False)
    run = generation_services.run_launch(scenario=scenario, count=1)
    assert run.provider == "demo"


def test_the_launch_form_lists_the_judges_endpoint(
    admin_client, judge_on_a_keyless_endpoint, django_assert_max_num_queries
):
    from django.urls import reverse

    from tests.factories import ScenarioFactory

    ScenarioFactory.create_batch(3)  # the judges are read in one query for every scenario
    url = reverse("admin:generation_generationrun_add")
    with django_assert_max_num_queries(12):
        page = admin_client.get(url).content.decode()
    assert "Judge → big-judge" in page and f"{JUDGE_KEY} not set" in page
    assert "500 requests/min" in page
    scenario = judge_on_a_keyless_endpoint
    response = admin_client.post(url, {"scenario": scenario.pk, "count": "1", "max_in_flight": "1"})
    assert response.status_code == 200
    assert "called by Judge" in " ".join(response.context["form"].non_field_errors())


def test_the_run_page_lists_the_judge_with_the_personas(
    client, admin_user, judge_on_a_keyless_endpoint, django_assert_max_num_queries
):
    from tests.factories import RunFactory

    run = RunFactory(scenario=judge_on_a_keyless_endpoint)
    client.force_login(admin_user)
    with django_assert_max_num_queries(12):
        html = client.get(run.get_absolute_url()).content.decode()
    table = html[html.index('id="run-endpoints"') :]
    assert "paid-judge" in table and "Judge → big-judge" in table
    assert "Teacher → " in table and table.index("Teacher → ") < table.index("Judge → ")
