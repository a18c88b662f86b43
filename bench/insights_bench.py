"""Dashboard pages at scale: each page's server time against the time of its own queries.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/insights_bench SECRET_KEY=bench \\
    flock /tmp/bench.lock .venv/bin/python bench/insights_bench.py --dialogues 100000 --turns 10

Seeds (once; `--reseed` to redo) one scenario with one run of `--dialogues` dialogues ×
`--turns` turns in SQL (generate_series), with reviews, claim and verdict events, flags,
corrections and two finished exports, spread over 10 reviewers and the last 20 days. Then, for
each dashboard page, alternately: the whole request through Django's test client (middleware,
session, views, selectors, templates; DEBUG off), and the same page's SQL statements, captured
from that request, run directly on the same connection. The ratio of the medians is the
page's overhead over its queries (target <= 1.5x); the query count must not change between
repetitions. Not a test: figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "synthreview.settings")
os.environ.setdefault("SECRET_KEY", "insights-bench-only")
os.environ["DEBUG"] = "0"
os.environ.setdefault("ALLOWED_HOSTS", "testserver")

SLUG = "bench-insights"
REVIEWERS = 10
MODELS = ("teacher-large", "teacher-small")


def _insert_select(model, exprs: dict[str, str], source: str, params: tuple = ()) -> int:
    """INSERT INTO model's table SELECT ... FROM source. Columns not in `exprs` get the field's
    default, so the seed keeps up with new model fields."""
    from django.db import connection

    columns, values, args = [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key and field.column not in exprs:
            continue
        columns.append(f'"{field.column}"')
        if field.column in exprs:
            values.append(exprs[field.column].replace("%", "%%"))  # modulo, not a parameter
        else:
            values.append("%s")
            args.append(field.get_db_prep_save(field.get_default(), connection))
    sql = (
        f'INSERT INTO "{model._meta.db_table}" ({", ".join(columns)}) '
        f"SELECT {', '.join(values)} FROM {re.sub(r'%(?!s)', '%%', source)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*args, *params])
        return cursor.rowcount


def seed(dialogues: int, turns: int) -> None:
    from django.db import connection, transaction

    with transaction.atomic():
        ids = _seed_setup(dialogues, turns)
        _seed_dialogues(ids, dialogues, turns)
        _seed_reviews(ids)
        _seed_flags_and_exports(ids)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _seed_setup(dialogues: int, turns: int) -> dict[str, int]:
    """An empty database but for the scenario, its personas, the run and the users."""
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from generation.models import GenerationRun, Persona, Scenario, Side
    from review.models import REVIEWER_GROUP

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE review_flag, review_turnrevision, review_reviewevent, "
            "review_dialoguereview, review_datasetexport, generation_turn, "
            "generation_dialogue, generation_generationrun CASCADE"
        )
    Scenario.objects.filter(slug=SLUG).delete()
    User.objects.filter(username__startswith="bench-").delete()
    scenario = Scenario.objects.create(
        slug=SLUG, name="Bench: trigonometry", opening_instruction="{topic}",
        topics=["identities"], max_turns=turns,
    )  # fmt: skip
    personas = [
        Persona.objects.create(scenario=scenario, position=position, name=name, side=side,
                               system_prompt=name, opens=position == 1)
        for position, name, side in ((0, "Teacher", Side.ASSISTANT), (1, "Student", Side.USER))
    ]  # fmt: skip
    run = GenerationRun.objects.create(
        scenario=scenario, requested_count=dialogues, provider="openai", status="finished",
        done_count=dialogues, cost_usd=dialogues * 0.004,
    )  # fmt: skip
    group, _ = Group.objects.get_or_create(name=REVIEWER_GROUP)
    users = [User.objects.create(username=f"bench-reviewer-{i}") for i in range(REVIEWERS)]
    group.user_set.add(*users)
    User.objects.create(username="bench-lead", is_staff=True)
    return {
        "scenario": scenario.pk, "run": run.pk, "teacher": personas[0].pk,
        "student": personas[1].pk, "user": users[0].pk,
    }  # fmt: skip


def _seed_dialogues(ids: dict[str, int], dialogues: int, turns: int) -> None:
    """3 % failed; every complete one has `turns` turns, 1.5 % of them corrected."""
    from generation.models import Dialogue, Turn

    _insert_select(Dialogue, {
        "run_id": str(ids["run"]), "scenario_id": str(ids["scenario"]), "index": "g",
        "topic": "'identities ' || g",
        "status": "CASE WHEN g % 33 = 0 THEN 'failed' ELSE 'complete' END",
        "stop_reason": "CASE WHEN g % 33 = 0 THEN '' WHEN g % 7 = 0 THEN 'end marker' "
        "WHEN g % 11 = 0 THEN 'loop: repeated turn' ELSE 'turn limit reached' END",
        "created_at": "now() - interval '21 days'", "updated_at": "now()",
    }, "generate_series(0, %s) AS g", (dialogues - 1,))  # fmt: skip
    teacher_model = f"CASE WHEN d.index % 2 = 0 THEN '{MODELS[0]}' ELSE '{MODELS[1]}' END"
    _insert_select(Turn, {
        "dialogue_id": "d.id", "position": "p",
        "persona_id": f"CASE WHEN p % 2 = 0 THEN {ids['student']} ELSE {ids['teacher']} END",
        "side": "CASE WHEN p % 2 = 0 THEN 'user' ELSE 'assistant' END",
        "original_text": "'Turn ' || p || ' of ' || d.id",
        "text": "CASE WHEN (d.id * 7 + p) % 67 = 0 THEN 'Corrected ' || p "
        "ELSE 'Turn ' || p || ' of ' || d.id END",
        "model": f"CASE WHEN p % 2 = 0 THEN 'student-sim' ELSE {teacher_model} END",
        "prompt_tokens": "200 + 40 * p", "completion_tokens": "60 + (d.id * 13 + p) % 180",
        "latency_ms": "200 + (d.id * 31 + p * 17) % 5000", "finish_reason": "'stop'",
        "warnings": "CASE WHEN (d.id + p) % 41 = 0 THEN '[\"repetition\"]'::jsonb "
        "WHEN (d.id + p) % 53 = 0 THEN '[\"truncated\", \"loop\"]'::jsonb "
        "ELSE '[]'::jsonb END",
        "created_at": "d.created_at", "updated_at": "d.created_at",
    }, "generation_dialogue d CROSS JOIN generate_series(0, %s) AS p "
       "WHERE d.status = 'complete'", (turns - 1,))  # fmt: skip


def _seed_reviews(ids: dict[str, int]) -> None:
    """85 % of complete dialogues decided (70 % approved), the rest waiting; decided over the
    last 20 days by one of the reviewers, who claimed it 3 to 14 minutes before."""
    from review.models import DialogueReview, ReviewEvent

    waiting = "d.id % 20 < 3"
    reviewer = f"{ids['user']} + d.id % {REVIEWERS}"
    decided_at = "now() - (d.id % 20) * interval '1 day' - (d.id % 600) * interval '1 minute'"
    _insert_select(DialogueReview, {
        "dialogue_id": "d.id",
        "status": f"CASE WHEN {waiting} THEN 'pending' WHEN d.id % 20 < 17 THEN 'approved' "
        "ELSE 'rejected' END",
        "decided_by_id": f"CASE WHEN {waiting} THEN NULL ELSE {reviewer} END",
        "decided_at": f"CASE WHEN {waiting} THEN NULL ELSE {decided_at} END",
    }, "generation_dialogue d WHERE d.status = 'complete'")  # fmt: skip
    verdict = "CASE WHEN r.status = 'approved' THEN 'approve' ELSE 'reject' END"
    claimed = "r.decided_at - (3 + r.dialogue_id % 12) * interval '1 minute'"
    for kind, at in (("'claim'", claimed), (verdict, "r.decided_at")):
        _insert_select(ReviewEvent, {
            "dialogue_id": "r.dialogue_id", "actor_id": "r.decided_by_id", "kind": kind,
            "created_at": at,
        }, "review_dialoguereview r WHERE r.status != 'pending'")  # fmt: skip


def _seed_flags_and_exports(ids: dict[str, int]) -> None:
    from review.models import DatasetExport, Flag, TurnRevision

    author = f"{ids['user']} + t.dialogue_id % {REVIEWERS}"
    categories = "(ARRAY['factual','reasoning','off_topic','role_break','tone','other'])"
    _insert_select(Flag, {
        "turn_id": "t.id", "category": f"{categories}[1 + (t.id % 6)]",
        "created_by_id": author, "created_at": "t.created_at", "resolution": "'corrected'",
    }, "generation_turn t WHERE (t.dialogue_id * 3 + t.position * t.position) % 37 = 0",
    )  # fmt: skip
    _insert_select(TurnRevision, {
        "turn_id": "t.id", "author_id": author, "kind": "'edit'", "before": "t.original_text",
        "after": "t.text", "version": "2",
        "created_at": "now() - (t.dialogue_id % 20) * interval '1 day'",
    }, "generation_turn t WHERE t.text != t.original_text")  # fmt: skip
    for days_ago, filters in ((10, {"run_ids": [ids["run"]]}), (2, {"scenario": SLUG})):
        DatasetExport.objects.create(
            format="openai", status="done", filters=filters,
            started_at=_ago(days_ago), finished_at=_ago(days_ago),
        )  # fmt: skip


def _ago(days: int):
    from datetime import timedelta

    from django.utils import timezone

    return timezone.now() - timedelta(days=days)


def measure(repeats: int) -> list[dict]:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from generation.models import GenerationRun, Scenario

    # Production reads hashed names from collectstatic's manifest (a dict lookup); here the
    # plain storage serves the same names without a collectstatic run.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    scenario = Scenario.objects.get(slug=SLUG)
    run = GenerationRun.objects.get(scenario=scenario)
    client = Client()
    client.force_login(User.objects.get(username="bench-lead"))
    pages = {
        "run": reverse("review:insights_run", args=[run.pk]),
        "scenario": reverse("review:insights_scenario", args=[scenario.pk]),
        "overview": reverse("review:insights"),
        "team": reverse("review:insights_team"),
    }
    results = []
    for name, path in pages.items():
        client.get(path)  # warm caches (templates, URL resolver, PostgreSQL buffers)
        page_times, sql_times, counts = [], [], set()
        for _ in range(repeats):
            with CaptureQueriesContext(connection) as captured:
                start = time.perf_counter()
                response = client.get(path)
                page_times.append(time.perf_counter() - start)
            assert response.status_code == 200, (name, response.status_code)
            counts.add(len(captured.captured_queries))
            statements = [query["sql"] for query in captured.captured_queries]
            start = time.perf_counter()
            with connection.cursor() as cursor:
                for sql in statements:
                    cursor.execute(sql)
                    if cursor.description:
                        cursor.fetchall()
            sql_times.append(time.perf_counter() - start)
        page, sql = statistics.median(page_times), statistics.median(sql_times)
        results.append({"page": name, "queries": sorted(counts), "page_s": page, "sql_s": sql,
                        "ratio": page / sql})  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dialogues", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()

    import django

    # Django's client warns that collectstatic's directory is missing; nothing reads it here.
    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from generation.models import Dialogue, Scenario, Turn

    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL database of its own (it is overwritten).")
    call_command("migrate", verbosity=0)
    seeded = Scenario.objects.filter(slug=SLUG).exists()
    if args.reseed or not seeded or Dialogue.objects.count() != args.dialogues:
        start = time.perf_counter()
        seed(args.dialogues, args.turns)
        print(f"seeded in {time.perf_counter() - start:.1f} s")
    print(f"{Dialogue.objects.count()} dialogues, {Turn.objects.count()} turns")
    print(f"{'page':<10}{'queries':>9}{'page (s)':>11}{'SQL (s)':>10}{'ratio':>8}")
    for row in measure(args.repeats):
        queries = ",".join(map(str, row["queries"]))
        print(f"{row['page']:<10}{queries:>9}{row['page_s']:>11.3f}{row['sql_s']:>10.3f}"
              f"{row['ratio']:>8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
