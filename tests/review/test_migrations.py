"""Migrations that move data: the judge suggestions' one state each becomes a decision in the
review it was made in."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("review", "0005_judge_endpoint")]
AFTER = [("review", "0006_suggestion_decisions")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_decided_suggestions_become_decisions_in_their_review():
    apps = _migrate(BEFORE)
    try:
        User = apps.get_model("auth", "User")
        Dialogue = apps.get_model("generation", "Dialogue")
        Turn = apps.get_model("generation", "Turn")
        Suggestion = apps.get_model("review", "Suggestion")
        Flag = apps.get_model("review", "Flag")
        IndependentReview = apps.get_model("review", "IndependentReview")
        from tests.factories import dialogue_with_turns

        single, independent = dialogue_with_turns(2), dialogue_with_turns(2)
        single = Dialogue.objects.get(pk=single.pk)
        independent = Dialogue.objects.get(pk=independent.pk)
        alice = User.objects.create(username="alice")
        bob = User.objects.create(username="bob")
        mine = IndependentReview.objects.create(
            dialogue=independent, reviewer=bob, claim_expires_at=timezone.now()
        )
        turn = Turn.objects.get(dialogue=single, position=0)
        flag = Flag.objects.create(turn=turn, category="factual", created_by=alice)
        accepted = Suggestion.objects.create(
            turn=turn, category="factual", severity=2, status="accepted", flag=flag,
            decided_by=alice, decided_at=timezone.now(),
        )  # fmt: skip
        dismissed = Suggestion.objects.create(
            turn=Turn.objects.get(dialogue=independent, position=1), category="tone",
            severity=1, status="dismissed", decided_by=bob, decided_at=timezone.now(),
        )  # fmt: skip
        open_one = Suggestion.objects.create(turn=turn, category="tone", severity=1)

        apps = _migrate(AFTER)
        Decision = apps.get_model("review", "SuggestionDecision")
        rows = {
            d.suggestion_id: (d.status, d.review_id, d.flag_id, d.decided_by_id)
            for d in Decision.objects.all()
        }
        assert rows == {
            accepted.pk: ("accepted", None, flag.pk, alice.pk),
            dismissed.pk: ("dismissed", mine.pk, None, bob.pk),
        }
        assert open_one.pk not in rows
    finally:  # back to the latest state for the other tests
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
