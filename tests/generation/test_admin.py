from __future__ import annotations

import threading
from unittest import mock

import pytest
from django.urls import reverse

from generation.llm.demo import DemoClient
from generation.models import Dialogue, GenerationRun, Persona, Scenario
from tests.factories import DialogueFactory, RunFactory, ScenarioFactory, dialogue_with_turns

ADD_URL = reverse("admin:generation_scenario_add")


def scenario_post(**overrides):
    data = {
        "slug": "geometry",
        "name": "Geometry",
        "description": "",
        "opening_instruction": "Ask {partner} about {topic}.",
        "topics": "angles\ncircles",
        "topic_order": "sequential",
        "min_turns": "2",
        "max_turns": "6",
        "end_marker": "<END>",
        "personas-TOTAL_FORMS": "2",
        "personas-INITIAL_FORMS": "0",
        "personas-MIN_NUM_FORMS": "2",
        "personas-MAX_NUM_FORMS": "2",
    }
    for i, (name, side, opens) in enumerate(
        [("Teacher", "assistant", ""), ("Student", "user", "on")]
    ):
        data |= {
            f"personas-{i}-position": str(i),
            f"personas-{i}-name": name,
            f"personas-{i}-side": side,
            f"personas-{i}-system_prompt": f"You are the {name.lower()}.",
            f"personas-{i}-model": "",
            f"personas-{i}-temperature": "0.7",
            f"personas-{i}-max_tokens": "400",
        }
        if opens:
            data[f"personas-{i}-opens"] = opens
    data.update(overrides)
    return data


def test_valid_scenario_is_saved_with_two_personas(admin_client):
    response = admin_client.post(ADD_URL, scenario_post())
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    scenario = Scenario.objects.get(slug="geometry")
    assert scenario.topics == ["angles", "circles"]
    assert scenario.personas.count() == 2


def errors_of(response):
    adminform = response.context["adminform"]
    inline_errors = [
        f.errors
        for formset in response.context["inline_admin_formsets"]
        for f in formset.formset.forms
    ]
    non_form = [
        formset.formset.non_form_errors() for formset in response.context["inline_admin_formsets"]
    ]
    return adminform.form.errors, inline_errors, non_form


def assert_rejected(response, field, text, *, persona=None):
    assert response.status_code == 200
    form_errors, inline_errors, non_form = errors_of(response)
    if persona is None and field:
        assert field in form_errors, form_errors
        assert text in " ".join(form_errors[field])
    elif persona is not None:
        assert field in inline_errors[persona], inline_errors
        assert text in " ".join(inline_errors[persona][field])
    else:
        assert text in " ".join(str(e) for e in non_form)
    assert not Scenario.objects.filter(slug="geometry").exists()  # nothing half-saved
    assert not Persona.objects.filter(scenario__slug="geometry").exists()


def test_empty_system_prompt_is_a_field_error(admin_client):
    response = admin_client.post(ADD_URL, scenario_post(**{"personas-1-system_prompt": "   "}))
    assert_rejected(response, "system_prompt", "required", persona=1)


def test_min_above_max_turns_names_the_field(admin_client):
    response = admin_client.post(ADD_URL, scenario_post(min_turns="8", max_turns="4"))
    assert_rejected(response, "min_turns", "cannot exceed max turns")


def test_bad_temperature_and_max_tokens(admin_client):
    response = admin_client.post(ADD_URL, scenario_post(**{"personas-0-temperature": "3.5"}))
    assert_rejected(response, "temperature", "less than or equal to 2", persona=0)
    response = admin_client.post(ADD_URL, scenario_post(**{"personas-0-max_tokens": "0"}))
    assert_rejected(response, "max_tokens", "greater than or equal to 1", persona=0)


def test_unknown_placeholder_in_the_opening_instruction(admin_client):
    response = admin_client.post(ADD_URL, scenario_post(opening_instruction="Discuss {subject}."))
    assert_rejected(response, "opening_instruction", "Unknown placeholder {subject}")
    response = admin_client.post(ADD_URL, scenario_post(opening_instruction="Unclosed {topic"))
    assert_rejected(response, "opening_instruction", "Not a valid template")


def test_empty_topics_and_two_openers(admin_client):
    response = admin_client.post(ADD_URL, scenario_post(topics="\n \n"))
    assert_rejected(response, "topics", "at least one topic")
    response = admin_client.post(ADD_URL, scenario_post(**{"personas-0-opens": "on"}))
    assert_rejected(response, None, "Exactly one persona opens")


def test_two_personas_on_one_side_are_refused(admin_client):
    response = admin_client.post(ADD_URL, scenario_post(**{"personas-1-side": "assistant"}))
    assert_rejected(response, None, "One persona must be on the user side")
    assert "both are assistant" in response.content.decode()


def test_launch_refuses_a_scenario_with_both_personas_on_one_side(admin_client):
    scenario = ScenarioFactory()
    scenario.personas.update(side="assistant")
    url = reverse("admin:generation_generationrun_add")
    response = admin_client.post(url, {"scenario": scenario.pk, "count": "1", "max_in_flight": "1"})
    assert response.status_code == 200
    assert "One persona must be on the user side" in " ".join(
        response.context["form"].errors["scenario"]
    )
    assert not GenerationRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_launch_form_returns_at_once_and_generates_on_a_thread_without_a_broker(
    admin_client, admin_user, generation_held
):
    """No broker: the request returns while the model is still answering (the thread holds
    the dialogue), lands on the run page, and the run finishes on its own."""
    scenario = ScenarioFactory()
    url = reverse("admin:generation_generationrun_add")
    page = admin_client.get(url).content.decode()
    assert "admin/css/forms.css" in page and 'class="required" for="id_scenario"' in page
    answering, release = threading.Event(), threading.Event()
    complete = DemoClient.complete

    def slow_complete(self, request):
        answering.set()
        assert release.wait(10), "the test never released the model"
        return complete(self, request)

    with mock.patch.object(DemoClient, "complete", slow_complete):
        response = admin_client.post(url, {"scenario": scenario.pk, "count": "3", "model_override": "",
                                           "temperature_override": "0.3", "max_in_flight": "2", "seed": ""})  # fmt: skip
        run = GenerationRun.objects.get()
        assert response.status_code == 302
        assert response["Location"] == reverse("generation:run_detail", args=[run.pk])
        generation_held.set()
        assert answering.wait(10)
        assert GenerationRun.objects.get().status == GenerationRun.Status.RUNNING
        assert "Running" in admin_client.get(response["Location"]).content.decode()
        release.set()
        # Wait for the thread itself: a test polling the run meanwhile locks SQLite's shared
        # in-memory database against the thread's writes.
        for thread in threading.enumerate():
            if thread.name == "synthreview-inline-generation":
                thread.join(timeout=20)
        run.refresh_from_db()
    assert (
        run.created_by == admin_user and run.max_in_flight == 2 and run.temperature_override == 0.3
    )
    assert run.status == GenerationRun.Status.FINISHED and run.dialogues.count() == 3


def test_launch_form_errors(admin_client):
    scenario = ScenarioFactory(personas=False)
    url = reverse("admin:generation_generationrun_add")
    response = admin_client.post(url, {"scenario": scenario.pk, "count": "0", "max_in_flight": "0"})
    form = response.context["form"]
    assert "exactly two personas" in " ".join(form.errors["scenario"])
    assert "count" in form.errors and "max_in_flight" in form.errors
    assert "Please correct the errors below." in response.content.decode()
    assert not GenerationRun.objects.exists()


def test_run_change_page_shows_progress_and_cancels_after_confirming(admin_client):
    run = RunFactory(status=GenerationRun.Status.RUNNING, requested_count=2)
    dialogue_with_turns(2, run=run)
    DialogueFactory(run=run, status=Dialogue.Status.PENDING)
    url = reverse("admin:generation_generationrun_change", args=[run.pk])
    cancel_url = reverse("admin:generation_generationrun_cancel", args=[run.pk])
    html = admin_client.get(url).content.decode()
    assert f'hx-get="{run.get_absolute_url()}?fragment=progress"' in html
    assert "vendor/htmx/htmx.min.js" in html and f'href="{cancel_url}"' in html
    # Asking is harmless: the confirmation page says what stops, and nothing stops yet.
    confirm = admin_client.get(cancel_url).content.decode()
    assert "1 unfinished dialogue</strong>" in confirm and "Yes, cancel the run" in confirm
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.RUNNING
    response = admin_client.post(cancel_url)
    assert response.status_code == 302 and response["Location"] == url
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED
    # A finished run has nothing to cancel: back to its page with a note.
    response = admin_client.post(cancel_url, follow=True)
    assert "had already ended" in response.content.decode()


def test_admin_pages_show_the_demo_banner(admin_client, settings):
    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert "Demo LLM provider" in page and "css/admin.css" in page
    settings.OPENAI_API_KEY = "sk-test"
    assert "Demo LLM provider" not in admin_client.get(reverse("admin:index")).content.decode()


def test_dialogue_admin_finds_dialogues_by_id_and_topic_and_sorts_them(admin_client):
    first = dialogue_with_turns(1, topic="the sine rule")
    second = dialogue_with_turns(1, topic="the cosine rule")
    changelist = reverse("admin:generation_dialogue_changelist")

    def found(query: dict) -> list[int]:
        response = admin_client.get(changelist, query)
        assert response.status_code == 200
        return [d.pk for d in response.context["cl"].result_list]

    assert found({"q": str(second.pk)}) == [second.pk]
    assert found({"q": f"#{first.pk}"}) == [first.pk]
    assert found({"q": "cosine"}) == [second.pk]
    assert found({"q": "nothing like it"}) == []
    # The Dialogue column sorts (by id), both ways.
    assert found({"o": "1"}) == [first.pk, second.pk]
    assert found({"o": "-1"}) == [second.pk, first.pk]


def test_cancel_selected_runs_asks_first(admin_client):
    running = RunFactory(status=GenerationRun.Status.RUNNING)
    finished = RunFactory(status=GenerationRun.Status.FINISHED)
    changelist = reverse("admin:generation_generationrun_changelist")
    data = {"action": "cancel_runs_action", "_selected_action": [running.pk, finished.pk],
            "index": "0"}  # fmt: skip
    page = admin_client.post(changelist, data)
    html = page.content.decode()
    assert page.status_code == 200 and "Yes, cancel 1 run" in html
    assert str(running) in html and str(finished) not in html
    running.refresh_from_db()
    assert running.status == GenerationRun.Status.RUNNING
    response = admin_client.post(changelist, {**data, "confirm": "yes"}, follow=True)
    assert "Cancelled 1 run(s)." in response.content.decode()
    running.refresh_from_db()
    assert running.status == GenerationRun.Status.CANCELLED
