"""`manage.py seed_demo`: example scenarios (each with a judge), the demo/demo login and one
demo run each, judged by the demo provider's scripted judge.

It lives in review because the demo login is a reviewer (and staff); the scenarios and runs
come from generation's services.

Idempotent and quick on re-run: scenarios are upserted, the user is updated in place, and the
demo runs are only created when no run exists at all. Runs are generated in-process with the
offline demo provider, whatever LLM settings are present, since the demo has no broker.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandParser
from django.test.utils import override_settings

from generation import services
from generation.models import Endpoint, GenerationRun, Scenario
from review import services as review_services
from review.judge.prompt import DEFAULT_RUBRIC
from review.models import JudgeConfig, ReviewPolicy, Suggestion
from review.permissions import reviewer_group_setup
from review.selectors import QueueFilters, policy_of

# How each example scenario's demo run samples its variables: the tutoring run covers every
# level equally, the fraud run over-samples its rare customer (the rebalancing a real fraud
# data set needs).
DEMO_RUN_OPTIONS = {
    "trig-tutoring": {"variable_coverage": GenerationRun.VariableCoverage.BALANCED},
    "card-fraud-report": {
        "oversample": {"customer": {"an elderly customer who rarely banks online": 5}}
    },
}


class Command(BaseCommand):
    help = "Load example scenarios, create the demo/demo user and demo runs (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dialogues", type=int, default=4, help="Dialogues per demo run.")

    def handle(self, *args, **options) -> None:
        scenarios = services.scenario_upsert_examples()
        for scenario in scenarios:
            JudgeConfig.objects.get_or_create(
                scenario=scenario, defaults={"rubric": DEFAULT_RUBRIC}
            )
        user, created = User.objects.get_or_create(username="demo")
        user.is_staff = user.is_superuser = True
        if created or not user.check_password("demo"):
            user.set_password("demo")
        user.save()
        group = reviewer_group_setup()
        user.groups.add(group)
        second = self._second_reviewer(group)
        self._independent_reviews(scenarios[-1])
        self.stdout.write(
            f"Scenarios: {', '.join(s.slug for s in scenarios)}; login demo/demo (admin) and "
            f"{second.username}/{second.username} (reviewer). Dialogues of "
            f"{scenarios[-1].slug!r} need two independent reviews."
        )
        # An example second endpoint to look at in the admin (its Test shows the error while no
        # server listens there); the demo's personas stay on the default (offline) endpoint.
        Endpoint.objects.get_or_create(
            name="example-vllm",
            defaults={
                "base_url": "http://127.0.0.1:8001/v1",
                "default_model": "llama3.1:8b",
                "max_concurrent": 32,
                "requests_per_minute": 600,
                "tokens_per_minute": 200_000,
            },
        )
        if GenerationRun.objects.exists():
            self.stdout.write("Runs exist already: no demo runs created.")
            return
        from synthreview.celery import app

        # No broker in the demo: tasks run inline, with the scripted provider.
        eager = app.conf.task_always_eager
        app.conf.task_always_eager = True
        try:
            with override_settings(OPENAI_BASE_URL="", OPENAI_API_KEY=""):
                for scenario in scenarios:
                    run = services.run_launch(
                        scenario=scenario,
                        count=options["dialogues"],
                        created_by=user,
                        seed=0,
                        **DEMO_RUN_OPTIONS.get(scenario.slug, {}),
                    )
                    run.refresh_from_db()
                    marks = Suggestion.objects.filter(turn__dialogue__run=run).count()
                    approved = self._sample_approval(run, second)
                    self.stdout.write(
                        f"Demo run #{run.pk} ({scenario.slug}): {run.done_count} dialogues, "
                        f"{run.get_status_display().lower()}; the judge suggested {marks} "
                        f"flag{'s' if marks != 1 else ''}"
                        + (f"; {second.username} approved #{approved.pk}." if approved else ".")
                    )
        finally:
            app.conf.task_always_eager = eager

    def _sample_approval(self, run: GenerationRun, reviewer: User):
        """One decision per single-review run, so the export and the dashboards have something
        to show from the start; the rest is left for the demo's reviewer."""
        if policy_of(run.dialogues.first()).reviews_required > 1:
            return None
        filters = QueueFilters(run_id=run.pk, choices=(("duplicates", "no"),))
        dialogue = review_services.review_claim_next(actor=reviewer, filters=filters)
        if dialogue is None:
            return None
        version = review_services.review_for(dialogue).version
        review_services.dialogue_approve(
            dialogue_id=dialogue.pk, actor=reviewer, expected_version=version
        )
        return dialogue

    def _second_reviewer(self, group: Group) -> User:
        """A plain reviewer, so two people can review the same dialogue independently."""
        user, created = User.objects.get_or_create(username="expert")
        if created or not user.check_password("expert"):
            user.set_password("expert")
            user.save()
        user.groups.add(group)
        return user

    def _independent_reviews(self, scenario: Scenario) -> None:
        ReviewPolicy.objects.update_or_create(scenario=scenario, defaults={"reviews_required": 2})
