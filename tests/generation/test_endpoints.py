"""Endpoints: which server and model each persona calls, keys kept in the environment (refused
at launch when missing), the admin's Test, the client reading the provider's rate limits."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from generation import services
from generation.engine.endpoints import call_target, endpoint_complete
from generation.llm import ChatRequest, TransientLLMError, endpoint_connection
from generation.llm.openai_client import OpenAIClient
from generation.models import DEFAULT_ENDPOINT_NAME, Endpoint, GenerationRun, Persona
from tests.factories import RunFactory, ScenarioFactory
from tests.tooling.fake_openai import FakeOpenAI

MISSING = "SYNTHREVIEW_TEST_KEY_NOT_SET"


@pytest.fixture
def paid(db, monkeypatch):
    """An endpoint whose key variable is not set."""
    monkeypatch.delenv(MISSING, raising=False)
    return Endpoint.objects.create(
        name="paid", base_url="https://llm.example.org/v1", api_key_env=MISSING,
        default_model="big-model", requests_per_minute=1200, tokens_per_minute=300_000,
    )  # fmt: skip


def test_every_persona_starts_on_the_default_endpoint_which_is_the_environment(db, settings):
    scenario = ScenarioFactory()
    default = Endpoint.objects.get(name=DEFAULT_ENDPOINT_NAME)
    assert {p.endpoint_id for p in scenario.personas.all()} == {default.pk}
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = "", ""
    assert endpoint_connection(default).provider == "demo"
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # a local server needs no key
    connection = endpoint_connection(default)
    assert (connection.provider, connection.base_url, connection.missing_key) == (
        "openai", "http://127.0.0.1:9/v1", ""
    )  # fmt: skip


def test_a_key_is_read_from_the_variable_the_endpoint_names(paid, monkeypatch):
    assert endpoint_connection(paid).missing_key == MISSING
    monkeypatch.setenv(MISSING, "sk-secret")
    connection = endpoint_connection(paid)
    assert (connection.api_key, connection.missing_key) == ("sk-secret", "")


def test_the_model_comes_from_the_persona_else_the_endpoint_else_the_setting(paid, settings):
    settings.SYNTHREVIEW_LLM_MODEL = "fallback"
    scenario = ScenarioFactory()
    teacher, student = scenario.personas.order_by("position")
    Persona.objects.filter(pk=teacher.pk).update(endpoint=paid, model="")
    Persona.objects.filter(pk=student.pk).update(model="small")
    teacher.refresh_from_db()
    student.refresh_from_db()
    run = GenerationRun(scenario=scenario)
    assert call_target(run=run, persona=teacher) == (paid, "big-model")
    assert call_target(run=run, persona=student)[1] == "small"
    student.endpoint.default_model = ""
    assert call_target(run=GenerationRun(model_override="m2"), persona=student)[1] == "m2"
    # An endpoint override takes the personas' models with it: theirs name another server's.
    override = GenerationRun(endpoint_override=paid)
    assert call_target(run=override, persona=student) == (paid, "big-model")


def test_a_missing_key_is_refused_at_launch_and_no_run_is_created(paid):
    scenario = ScenarioFactory()
    scenario.personas.filter(position=0).update(endpoint=paid)
    with pytest.raises(services.EndpointNotReady, match=f"variable {MISSING}, which is not set"):
        services.run_launch(scenario=scenario, count=2)
    with pytest.raises(CommandError, match=f"Endpoint 'paid' \\(called by Teacher\\).*{MISSING}"):
        call_command("generate", "--scenario", scenario.slug, "--count", "1")
    assert not GenerationRun.objects.exists()


def test_the_launch_form_shows_each_scenarios_endpoints_and_refuses_a_missing_key(
    admin_client, paid
):
    scenario = ScenarioFactory(name="Trig")
    url = reverse("admin:generation_generationrun_add")
    page = admin_client.get(url).content.decode()
    assert "Trig" in page and "300,000 tokens/min" not in page  # no persona calls it yet
    scenario.personas.filter(position=0).update(endpoint=paid)
    page = admin_client.get(url).content.decode()
    assert "Teacher → big-model" in page and f"{MISSING} not set" in page
    assert "1,200 requests/min, 300,000 tokens/min" in page
    response = admin_client.post(url, {"scenario": scenario.pk, "count": "1", "max_in_flight": "1"})
    assert response.status_code == 200
    assert MISSING in " ".join(response.context["form"].non_field_errors())
    assert not GenerationRun.objects.exists()


def test_generate_names_its_endpoints_and_refuses_an_unknown_one(db, settings):
    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    scenario = ScenarioFactory(slug="trig")
    with pytest.raises(CommandError, match="Unknown endpoint 'nope'. Known: default."):
        call_command("generate", "--scenario", "trig", "--count", "1", "--endpoint", "nope")
    out = StringIO()
    call_command("generate", "--scenario", "trig", "--count", "1", "--endpoint", "default",
                 stdout=out)  # fmt: skip
    assert "Endpoint default (offline demo provider): Teacher -> gpt-4o-mini" in out.getvalue()
    assert GenerationRun.objects.get(scenario=scenario).endpoint_override.name == "default"


def test_endpoint_admin_never_shows_a_key_and_its_test_lists_the_models(
    admin_client, monkeypatch, fake_openai
):
    monkeypatch.setenv("SYNTHREVIEW_TEST_KEY", "sk-very-secret")
    endpoint = Endpoint.objects.create(
        name="local", base_url=fake_openai.url, api_key_env="SYNTHREVIEW_TEST_KEY"
    )
    for url in (
        reverse("admin:generation_endpoint_changelist"),
        reverse("admin:generation_endpoint_change", args=[endpoint.pk]),
        reverse("admin:generation_endpoint_test", args=[endpoint.pk]),
    ):
        page = admin_client.get(url).content.decode()
        assert "sk-very-secret" not in page
    assert (
        reverse("admin:generation_endpoint_test", args=[endpoint.pk])
        in admin_client.get(
            reverse("admin:generation_endpoint_change", args=[endpoint.pk])
        ).content.decode()
    )
    assert "<code>fake-model</code>" in page and "It answers." in page
    down = Endpoint.objects.create(name="down", base_url="http://127.0.0.1:9/v1")
    page = admin_client.get(reverse("admin:generation_endpoint_test", args=[down.pk]))
    assert "The test failed: connection error" in page.content.decode()


def test_the_default_endpoint_cannot_be_deleted(admin_client, db):
    default = Endpoint.objects.get(name=DEFAULT_ENDPOINT_NAME)
    url = reverse("admin:generation_endpoint_delete", args=[default.pk])
    assert admin_client.get(url).status_code == 403


def test_the_client_reads_rate_limit_headers_and_a_429s_retry_after():
    with FakeOpenAI(rpm=60, tpm=6000, burst_seconds=1) as fake:  # a bucket of 1 request
        client = OpenAIClient(base_url=fake.url, api_key="k1", timeout=5)
        request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi there"}],
                              temperature=0, max_tokens=10)  # fmt: skip
        result = client.complete(request)
        limits = result.rate_limits
        assert (limits.limit_requests, limits.remaining_requests, limits.limit_tokens) == (
            60, 0, 6000
        )  # fmt: skip
        assert 0.9 <= limits.reset_requests <= 1.0
        with pytest.raises(TransientLLMError) as caught:
            client.complete(request)
        error = caught.value
        assert error.status == 429 and 0.5 < error.retry_after <= 1.0
        assert error.rate_limits.remaining_requests == 0
        # Another key has its own budget; without headers, nothing to read.
        fake.configure(rate_headers=False)
        other = OpenAIClient(base_url=fake.url, api_key="k2", timeout=5).complete(request)
        assert other.rate_limits is None
        assert fake.state.rate_limited == 1


def test_a_judge_can_call_any_endpoint_and_gets_the_priced_usage(db, fake_openai, settings):
    settings.SYNTHREVIEW_MODEL_PRICES = {"judge-model": (1.0, 2.0)}
    endpoint = Endpoint.objects.create(name="judge", base_url=fake_openai.url)
    request = ChatRequest(model="judge-model", messages=[{"role": "user", "content": "a b c"}],
                          temperature=0, max_tokens=10)  # fmt: skip
    outcome = endpoint_complete(
        endpoint=endpoint, request=request, run=RunFactory(provider="openai")
    )
    assert fake_openai.state.payloads[-1]["model"] == "judge-model"
    usage = outcome.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 24)
    assert float(usage.cost_usd) == pytest.approx((3 * 1.0 + 24 * 2.0) / 1e6)
