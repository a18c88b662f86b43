from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from generation.models import Dialogue, GenerationRun, Scenario
from review.models import REVIEWER_GROUP, DialogueReview, ReviewPolicy
from tests.factories import ScenarioFactory


def test_generate_unknown_slug_lists_the_known_ones(db):
    ScenarioFactory(slug="trig")
    with pytest.raises(CommandError, match="Unknown scenario 'nope'. Known: trig."):
        call_command("generate", "--scenario", "nope", "--count", "1")


def test_generate_rejects_bad_numbers(db):
    ScenarioFactory(slug="trig")
    with pytest.raises(CommandError, match="--count"):
        call_command("generate", "--scenario", "trig", "--count", "0")
    with pytest.raises(CommandError, match="--temperature"):
        call_command("generate", "--scenario", "trig", "--count", "1", "--temperature", "5")


@pytest.mark.django_db(transaction=True)
def test_generate_wait_shows_a_progress_bar():
    ScenarioFactory(slug="trig")
    out = StringIO()
    call_command("generate", "--scenario", "trig", "--count", "3", "--wait", "--model", "gpt-4o-mini",
                 "--temperature", "0.2", stdout=out)  # fmt: skip
    text = out.getvalue()
    run = GenerationRun.objects.get()
    assert f"Launched run #{run.pk} (demo provider)." in text
    assert "[##############################] 100%  3 done, 0 failed" in text
    assert f"Run #{run.pk}: Finished." in text
    assert run.model_override == "gpt-4o-mini" and run.temperature_override == 0.2


@pytest.mark.django_db(transaction=True)
def test_seed_demo_is_idempotent(settings):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # ignored: the demo always uses scripts
    call_command("seed_demo", stdout=StringIO())
    assert set(Scenario.objects.values_list("slug", flat=True)) == {
        "trig-tutoring", "card-fraud-report", "gp-hypertension",
    }  # fmt: skip
    assert GenerationRun.objects.count() == 3
    assert set(GenerationRun.objects.values_list("status", "provider")) == {("finished", "demo")}
    assert Dialogue.objects.filter(status=Dialogue.Status.COMPLETE).count() == 12
    user = User.objects.get(username="demo")
    assert user.check_password("demo") and user.is_staff and user.is_superuser
    assert user.groups.filter(name=REVIEWER_GROUP).exists()
    # A second reviewer, and a scenario whose dialogues need two independent reviews.
    assert User.objects.get(username="expert").check_password("expert")
    assert ReviewPolicy.objects.get(scenario__slug="gp-hypertension").reviews_required == 2
    # One approved dialogue per single-review run (never a near-duplicate), so the README's
    # export command has something to write right after `make demo`.
    approved = DialogueReview.objects.filter(status=DialogueReview.Status.APPROVED)
    assert sorted(approved.values_list("dialogue__scenario__slug", flat=True)) == [
        "card-fraud-report", "trig-tutoring",
    ]  # fmt: skip
    assert not approved.filter(dialogue__signature__twin__isnull=False).exists()
    assert {r.decided_by.username for r in approved} == {"expert"}
    # Some demo dialogues carry a deliberate mistake for reviewers to find.
    texts = " ".join(Dialogue.objects.values_list("turns__text", flat=True))
    assert (
        "read me your full card number" in texts
        or "can't be refunded" in texts
        or "\\cos x$" in texts
    )

    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "no demo runs created" in out.getvalue()
    assert GenerationRun.objects.count() == 3 and Scenario.objects.count() == 3


def test_load_example_scenarios_is_idempotent_and_creates_no_runs(db):
    out = StringIO()
    call_command("load_example_scenarios", stdout=out)
    call_command("load_example_scenarios", stdout=out)
    slugs = set(Scenario.objects.values_list("slug", flat=True))
    assert {"trig-tutoring", "card-fraud-report", "gp-hypertension"} <= slugs
    assert Scenario.objects.count() == len(slugs)
    for scenario in Scenario.objects.prefetch_related("personas"):
        assert sorted(p.position for p in scenario.personas.all()) == [0, 1]
    assert not GenerationRun.objects.exists()
    assert not User.objects.exists()
    assert "trig-tutoring" in out.getvalue()
