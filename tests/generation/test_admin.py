from __future__ import annotations

from django.urls import reverse

from generation.models import Dialogue, GenerationRun, Persona, Scenario
from tests.factories import RunFactory, ScenarioFactory, dialogue_with_turns

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


def test_launch_form_creates_a_run_and_generates_it(
    admin_client, admin_user, django_capture_on_commit_callbacks
):
    scenario = ScenarioFactory()
    url = reverse("admin:generation_generationrun_add")
    assert admin_client.get(url).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"scenario": scenario.pk, "count": "3", "model_override": "",
                                           "temperature_override": "0.3", "max_in_flight": "2", "seed": ""})  # fmt: skip
    run = GenerationRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:generation_generationrun_change", args=[run.pk])
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
    assert not GenerationRun.objects.exists()


def test_run_change_page_shows_progress_and_cancels(admin_client):
    run = RunFactory(status=GenerationRun.Status.RUNNING, requested_count=2)
    dialogue_with_turns(2, run=run)
    url = reverse("admin:generation_generationrun_change", args=[run.pk])
    html = admin_client.get(url).content.decode()
    assert f'hx-get="{run.get_absolute_url()}?fragment=progress"' in html
    assert "vendor/htmx/htmx.min.js" in html and 'name="_cancel_run"' in html
    response = admin_client.post(url, {"_cancel_run": "1"})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED


def test_run_and_dialogue_admin_carry_the_export_actions(admin_client):
    from generation.admin import DialogueAdmin, GenerationRunAdmin
    from review.admin.exports import export_dialogues_action, export_runs_action

    assert export_runs_action in GenerationRunAdmin.actions
    assert export_dialogues_action in DialogueAdmin.actions
    dialogue = dialogue_with_turns(3, status=Dialogue.Status.FAILED)
    Dialogue.objects.filter(pk=dialogue.pk).update(
        failure_reason="HTTP 404 from the LLM server: no such model"
    )
    html = admin_client.get(
        reverse("admin:generation_dialogue_change", args=[dialogue.pk])
    ).content.decode()
    assert "HTTP 404 from the LLM server: no such model" in html
    assert html.count("Turn text") >= 3
    changelist = admin_client.get(reverse("admin:generation_dialogue_changelist")).content.decode()
    assert "HTTP 404 from the LLM server" in changelist
