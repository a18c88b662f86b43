"""Near-duplicate benchmark: `find_duplicates --rebuild` over N dialogues x 10 turns on
PostgreSQL, recall and precision on that corpus, and the check's CPU per completed dialogue
against the CPU of generating a turn.

    SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/duplicates_bench \\
        flock /tmp/bench.lock .venv/bin/python bench/duplicates_bench.py \\
        [--dialogues 100000] [--copies-per-100 5] [--reseed] [--checks 400]
        [--batches 1,10,50,200] [--skip-rebuild]

The database is created if missing, migrated and seeded with COPY (reused unless --reseed):
originals written from five topics' vocabularies (tests/tooling/corpus.py), then copies of
random originals (exact, one number changed, two turns swapped), completing in that order.

1. `manage.py find_duplicates --rebuild` as its own process: wall time, CPU (user + system,
   `wait4`) and peak RSS; dialogues per second. Then recall and precision of the marks.
2. In this process, with the demo provider and no latency: `--checks` dialogues generated
   (receivers off) for the CPU per turn. Then, for each batch size of `--batches`, the same
   dialogues taken out of the index (not timed), queued as at completion (not timed) and
   checked by `review.duplicates.pending_check` that many at a time, as the check task
   does: CPU per checked dialogue (`time.process_time`, this process only; the database
   server's CPU is not counted in either figure), with and without the run vocabulary; for
   seeded dialogues (unrelated to almost all others) and for the generated ones (the demo
   provider's text: hundreds of near-duplicates each). The ratio check / turn is the goal's
   figure (< 10 %), with the receiver's share in the completing worker measured first (the
   pending row, the flag, and what sending a task for every completion would cost instead):
   both sides per dialogue are the check and the pending row with the flag. Last, the check
   task's sweep for lost checks over the whole database; the generated run is deleted.

Use a database of its own: the seed is large.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "synthreview.settings")
os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "0")

TURNS = 10


def seed(n_dialogues: int, copies_per_100: int) -> None:
    from django.db import connection, transaction
    from django.utils import timezone
    from export_bench import _copy_rows

    from generation.models import Dialogue, GenerationRun, Persona, Scenario, Turn
    from tests.tooling.corpus import corpus

    copies = n_dialogues * copies_per_100 // 100
    samples = corpus(originals=n_dialogues - copies, copies=copies, topics=5, turns=TURNS)
    start = timezone.now() - timedelta(days=30)
    with transaction.atomic():
        scenario = Scenario.objects.create(
            slug="bench-dup",
            name="Bench duplicates",
            opening_instruction="Talk about {topic}.",
            topics=["topic 0"],
        )
        personas = [
            Persona.objects.create(
                scenario=scenario, position=0, name="Teacher", side="assistant",
                system_prompt="You teach.",
            ),
            Persona.objects.create(
                scenario=scenario, position=1, name="Student", side="user", opens=True,
                system_prompt="You learn.",
            ),
        ]  # fmt: skip
        run = GenerationRun.objects.create(
            scenario=scenario, requested_count=n_dialogues, provider="demo"
        )
        with connection.cursor() as django_cursor:
            cursor = django_cursor.cursor
            _copy_rows(
                cursor,
                Dialogue,
                (
                    {
                        "run_id": run.pk, "scenario_id": scenario.pk, "index": i,
                        "topic": f"topic {i % 5}", "status": "complete",
                        "finished_at": start + timedelta(milliseconds=10 * i),
                    }
                    for i in range(n_dialogues)
                ),
            )  # fmt: skip
            cursor.execute(
                "SELECT id FROM generation_dialogue WHERE run_id = %s ORDER BY index", [run.pk]
            )
            ids = [row[0] for row in cursor.fetchall()]

            def turns():
                for dialogue_id, sample in zip(ids, samples, strict=True):
                    for position, text in enumerate(sample.turns):
                        persona = personas[1 - position % 2]
                        yield {
                            "dialogue_id": dialogue_id, "position": position,
                            "persona_id": persona.pk, "side": persona.side,
                            "original_text": text, "text": text,
                        }  # fmt: skip

            _copy_rows(cursor, Turn, turns())
            cursor.execute("ANALYZE")


def rebuild() -> dict:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "find_duplicates", "--rebuild"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    output = process.stdout.read().strip()
    if status != 0:
        raise SystemExit(f"find_duplicates failed ({status}): {output}")
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "output": output,
    }


def marks(n_dialogues: int, copies_per_100: int) -> dict:
    """Recall and precision of the marks in the seeded run (its last dialogues are copies)."""
    from generation.models import Dialogue, GenerationRun
    from review.models import DialogueSignature

    copies = n_dialogues * copies_per_100 // 100
    seeded = GenerationRun.objects.filter(scenario__slug="bench-dup").order_by("pk").first()
    ids = list(Dialogue.objects.filter(run=seeded).order_by("index").values_list("pk", flat=True))
    copy_ids = set(ids[n_dialogues - copies :])
    marked = set(
        DialogueSignature.objects.filter(dialogue_id__in=ids, twin__isnull=False).values_list(
            "pk", flat=True
        )
    )
    found = len(marked & copy_ids)
    return {
        "copies": len(copy_ids),
        "marked": len(marked),
        "recall": round(found / len(copy_ids), 4) if copy_ids else None,
        "precision": round(found / len(marked), 4) if marked else None,
    }


def _generated(checks: int) -> tuple[int, list[int], float]:
    """`checks` demo dialogues generated here with no receivers: (run, ids, CPU ms per
    turn)."""
    from unittest import mock

    from django.test.utils import override_settings

    from generation import services
    from generation.models import Dialogue, Scenario, Turn
    from generation.signals import dialogue_completed
    from synthreview.celery import app

    app.conf.task_always_eager = True
    scenario = Scenario.objects.get(slug="bench-dup")
    scenario.min_turns = scenario.max_turns = TURNS
    scenario.end_marker = ""
    scenario.save()
    with (
        override_settings(OPENAI_BASE_URL="", OPENAI_API_KEY=""),
        mock.patch.object(dialogue_completed, "receivers", []),
    ):
        run = services.run_launch(scenario=scenario, count=1, seed=1, max_in_flight=1)
        ids = [
            Dialogue.objects.create(run=run, scenario=scenario, index=i + 1, topic="topic 0").pk
            for i in range(checks)
        ]
        cpu = time.process_time()
        for dialogue_id in ids:
            services.dialogue_generate(dialogue_id=dialogue_id)
        generate_cpu = time.process_time() - cpu
    return run.pk, ids, 1000 * generate_cpu / Turn.objects.filter(dialogue_id__in=ids).count()


def _unindexed(ids: list[int]) -> None:
    """Take the dialogues out of the index and their run's vocabulary (not timed)."""
    from review.duplicates import index

    vocabulary = index.Vocabulary()
    index._unindex(ids, vocabulary)
    index._vocabulary_add(vocabulary)


def _batched(ids: list[int], *, batch: int, vocabulary: bool) -> dict:
    """The dialogues queued as at completion (not timed), then checked by `pending_check`
    taking `batch` at a time, as the check task does."""
    from unittest import mock

    from review import duplicates
    from review.duplicates import index, statements

    _unindexed(ids)
    for dialogue_id in ids:
        statements.pending_add(dialogue_id)
    skip = index._vocabulary_add if vocabulary else lambda counts: None
    with mock.patch.object(index, "_vocabulary_add", skip):
        cpu, wall = time.process_time(), time.monotonic()
        taken = duplicates.pending_check(batch_size=batch)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    assert taken == len(ids), (taken, len(ids))
    batches = -(-len(ids) // batch)
    return {
        "cpu_ms": round(1000 * cpu / len(ids), 3),
        "wall_per_batch_ms": round(1000 * wall / batches, 1),
    }


def _queueing(ids: list[int]) -> dict:
    """CPU per completion of the receiver's part in the worker that completed the dialogue:
    the pending row, then with a broker the pending row with the flag (a task already on
    its way, its start known to this process: the usual case in a burst), the pending row
    with a question to Redis about the flag (the first completion of a burst in each
    process), or sending the task (no debounce: every completion); and a check task that
    finds nothing pending (its dialogues taken by the task before it)."""
    from django.conf import settings

    from review import duplicates
    from review.duplicates import queue, statements
    from review.tasks import check_near_duplicates
    from synthreview.celery import app

    result: dict = {}
    cpu = time.process_time()
    for dialogue_id in ids:
        statements.pending_add(dialogue_id)
    result["pending_row_ms"] = round(1000 * (time.process_time() - cpu) / len(ids), 3)
    duplicates.pending_check()
    cpu = time.process_time()
    for _ in range(50):
        duplicates.pending_check()
    result["task_finding_none_ms"] = round(1000 * (time.process_time() - cpu) / 50, 3)
    app.conf.task_always_eager = False
    try:
        if not settings.CELERY_BROKER_URL:
            return result
        client = queue._redis()
        # Another process's task is on its way: the first completion learns when it starts
        # from the flag, the next ones (the rest of the burst) only write their pending row.
        client.set(queue.FLAG_KEY, repr(time.time() + 60))
        cpu = time.process_time()
        for dialogue_id in ids:
            queue.check_queue(dialogue_id=dialogue_id)
        result["pending_row_and_flag_ms"] = round(1000 * (time.process_time() - cpu) / len(ids), 3)
        # The first completion of a burst in each process asks Redis.
        cpu = time.process_time()
        for dialogue_id in ids:
            queue._task_due = 0.0
            queue.check_queue(dialogue_id=dialogue_id)
        result["pending_row_and_flag_asked_ms"] = round(
            1000 * (time.process_time() - cpu) / len(ids), 3
        )
        nowhere = "bench-duplicates-nowhere"
        cpu = time.process_time()
        for _ in ids:
            check_near_duplicates.apply_async(queue=nowhere)
        result["send_task_ms"] = round(1000 * (time.process_time() - cpu) / len(ids), 3)
        client.delete(nowhere, queue.FLAG_KEY)
        queue._task_due = 0.0
    finally:
        app.conf.task_always_eager = True
    return result


def _sweep() -> dict:
    """The check task's sweep for lost checks over the whole database (it finds none)."""
    from django.db import transaction

    from review.duplicates import queue, statements

    with transaction.atomic():
        statements.index_lock()
        cpu, wall = time.process_time(), time.monotonic()
        found = queue.lost_checks_queue()
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return {"found": found, "wall_ms": round(1000 * wall, 1), "cpu_ms": round(1000 * cpu, 1)}


def check_cost(checks: int, batches: list[int]) -> dict:
    """CPU per generated turn; the completing worker's CPU per completion (the receiver);
    and per checked dialogue at each batch size, the check's CPU and both sides together:
    of `checks` seeded dialogues (unrelated to almost everything: the usual case) and of the
    generated ones (the demo provider's generic text: each has hundreds of near-duplicates),
    with and without the run vocabulary. The generated run is deleted at the end."""
    from generation.models import Dialogue, GenerationRun
    from review import duplicates

    run_id, generated, turn_ms = _generated(checks)
    try:
        seeded_run = GenerationRun.objects.filter(scenario__slug="bench-dup").order_by("pk")[0]
        seeded = list(
            Dialogue.objects.filter(run=seeded_run).order_by("index").values_list("pk", flat=True)
        )[:checks]
        result: dict = {"checks": checks, "cpu_per_turn_ms": round(turn_ms, 2)}
        _unindexed(seeded)
        queued = _queueing(seeded)
        duplicates.pending_check()
        queued["of_turn_pct"] = {k: round(100 * v / turn_ms, 1) for k, v in queued.items()}
        result["queueing"] = queued
        print("completing worker", queued, flush=True)
        worker_ms = queued.get("pending_row_and_flag_ms", queued["pending_row_ms"])
        for label, ids in (("unique", seeded), ("clustered", generated)):
            for batch in batches:
                for vocabulary in (True, False):
                    figures = _batched(ids, batch=batch, vocabulary=vocabulary)
                    figures["of_turn_pct"] = round(100 * figures["cpu_ms"] / turn_ms, 1)
                    figures["both_sides_ms"] = round(worker_ms + figures["cpu_ms"], 3)
                    figures["both_of_turn_pct"] = round(100 * figures["both_sides_ms"] / turn_ms, 1)
                    key = f"{label}_batch{batch}" + ("" if vocabulary else "_without_vocabulary")
                    result[key] = figures
                    print(key, figures, flush=True)
        result["sweep"] = _sweep()
    finally:
        GenerationRun.objects.filter(pk=run_id).delete()
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogues", type=int, default=100_000)
    parser.add_argument("--copies-per-100", type=int, default=5)
    parser.add_argument("--checks", type=int, default=400)
    parser.add_argument(
        "--batches", default="1,10,50,200", help="Batch sizes of the check, comma-separated."
    )
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument(
        "--skip-rebuild", action="store_true", help="Index only what is missing, then measure."
    )
    args = parser.parse_args()

    from export_bench import _database_ensure

    _database_ensure(os.environ["DATABASE_URL"], recreate=args.reseed)
    import django

    django.setup()
    from django.core.management import call_command

    from generation.models import Scenario

    call_command("migrate", verbosity=0)
    if not Scenario.objects.filter(slug="bench-dup").exists():
        started = time.monotonic()
        seed(args.dialogues, args.copies_per_100)
        print(
            f"seeded {args.dialogues} dialogues x {TURNS} turns in {time.monotonic() - started:.0f} s"
        )
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.skip_rebuild:
        from review import duplicates

        print("indexed", duplicates.index_existing(), "missing dialogues")
    else:
        result = rebuild()
        indexed = int(result["output"].split()[1])
        rate = indexed / result["wall_s"]
        print(f"find_duplicates --rebuild: {result} -> {rate:.0f} dialogues/s")
    print("marks:", marks(args.dialogues, args.copies_per_100))
    batches = [int(size) for size in args.batches.split(",")]
    print("check cost:", check_cost(args.checks, batches))
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
