"""The near-duplicate check on real `celery worker` processes: generation finishes a
dialogue, the completion signal enqueues the check by name, a worker runs it."""

from __future__ import annotations

import time

import pytest

from generation import services
from generation.models import GenerationRun
from review.models import DialogueSignature
from tests.factories import ScenarioFactory
from tests.tooling.workers import CeleryWorker, unique_queue


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_completed_dialogues_are_checked_by_the_worker(settings):
    """Two runs with one seed write the same dialogues (the demo provider's text depends on
    the seed and the index): each pair ends up marked once, whichever completed first."""
    queue = unique_queue("dup")
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    scenario = ScenarioFactory(min_turns=4, max_turns=6)
    env = {"OPENAI_BASE_URL": "", "OPENAI_API_KEY": ""}
    with CeleryWorker(queue=queue, concurrency=4, env=env) as worker:
        runs = [services.run_launch(scenario=scenario, count=3, seed=5) for _ in range(2)]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ended = GenerationRun.objects.filter(
                pk__in=[run.pk for run in runs], status=GenerationRun.Status.FINISHED
            ).count()
            if ended == 2 and DialogueSignature.objects.count() == 6:
                break
            time.sleep(0.2)
        assert DialogueSignature.objects.count() == 6, worker.output()[-4000:]
        assert "review.check_near_duplicates" in worker.output()
    marks = {
        (twin, pk)
        for pk, twin in DialogueSignature.objects.filter(twin__isnull=False).values_list(
            "dialogue_id", "twin_id"
        )
    }
    pairs = [
        {a, b}
        for a, b in zip(
            runs[0].dialogues.order_by("index").values_list("pk", flat=True),
            runs[1].dialogues.order_by("index").values_list("pk", flat=True),
            strict=True,
        )
    ]
    assert sorted(map(sorted, ({a, b} for a, b in marks))) == sorted(map(sorted, pairs))
