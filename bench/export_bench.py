"""Export benchmark: 100,000 approved dialogues x 10 turns (1M turns) from PostgreSQL.

    SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/exp_bench \\
        .venv/bin/python bench/export_bench.py [--dialogues 100000] [--turns 10] [--reseed]

The database named by DATABASE_URL is created if missing, migrated and seeded with COPY (the
seed is reused on later runs unless --reseed). Reported, in one run:

- the floor: PostgreSQL COPY of the same turn rows (approved dialogues' live turns, in export
  order) to a file, both server-side (`COPY ... TO 'file'`) and through the client
  (`COPY ... TO STDOUT` written by psycopg);
- `export_write` wall time for each format over all dialogues, and the ratio to each floor:
  each export runs 3 times, each time right after a measure of the floor (the machine's speed
  drifts over a run), and the best export is compared with the best of its floors;
- peak RSS of each export, measured in a fresh child process, at 10% and 100% of the dialogues
  (flat memory means both peaks are about the same).

Use a database of its own: the seed is large and the run drops nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "synthreview.settings")
# One plain connection: the benchmark may drop and recreate its database under a pool.
os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "0")

VOCABULARY = (
    "the sine of an angle is the ratio of the opposite side to the hypotenuse so for thirty "
    "degrees we get one half and the cosine of sixty degrees is also one half let us check it "
    "with the unit circle where every point is cos theta sin theta and the radius is one"
)
WORDS = VOCABULARY.split()
PII_SNIPPETS = [
    "You can email me at student{n}@example.org.",
    "My phone is +44 20 7946 0958.",
    "The card was 4111 1111 1111 1111.",
    "Server 10.0.{n}.1 is mine.",
]


def _database_ensure(url: str, *, recreate: bool = False) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if recreate:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _turn_text(rng: random.Random, dialogue: int, position: int) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 60)))
    numbers = f" So {rng.randint(2, 90)} + {rng.randint(2, 90)} = {rng.randint(4, 180)}, about {rng.random():.5f}."
    text = words.capitalize() + numbers
    # About 1 dialogue in 100 carries personal data, as a generated corpus might.
    if dialogue % 100 == 7 and position == 3:
        text += " " + rng.choice(PII_SNIPPETS).format(n=dialogue % 250)
    return text


def _copy_rows(cursor, model, rows) -> None:
    """COPY rows (dicts of column values) into `model`'s table, defaults for the rest."""
    from django.db import connection

    fields = [f for f in model._meta.concrete_fields if not (f.primary_key and f.column == "id")]
    columns = [f.column for f in fields]
    defaults = {}
    for f in fields:
        if f.has_default():
            defaults[f.column] = f.get_db_prep_save(f.get_default(), connection)
        elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            from django.utils import timezone

            defaults[f.column] = timezone.now()
        elif f.null:
            defaults[f.column] = None
        else:
            defaults[f.column] = ""
    names = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f'COPY "{model._meta.db_table}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([row.get(c, defaults[c]) for c in columns])


def seed(n_dialogues: int, n_turns: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.utils import timezone

    from generation.models import Dialogue, GenerationRun, Persona, Scenario, Turn
    from review.models import DialogueReview

    small = n_dialogues // 10
    with transaction.atomic():
        scenario = Scenario.objects.create(
            slug="bench-trig", name="Bench trigonometry", opening_instruction="Talk about {topic}."
        )
        teacher = Persona.objects.create(
            scenario=scenario,
            position=0,
            name="Teacher",
            side="assistant",
            system_prompt="You are a patient maths teacher.",
            model="bench-model",
        )
        student = Persona.objects.create(
            scenario=scenario,
            position=1,
            name="Student",
            side="user",
            system_prompt="You are a student.",
            opens=True,
            model="bench-model",
        )
        runs = [
            GenerationRun.objects.create(scenario=scenario, requested_count=small, provider="demo"),
            GenerationRun.objects.create(
                scenario=scenario, requested_count=n_dialogues - small, provider="demo"
            ),
        ]
        user, _ = User.objects.get_or_create(username="bench")
        now = timezone.now()
        with connection.cursor() as django_cursor:
            cursor = django_cursor.cursor
            _copy_rows(
                cursor,
                Dialogue,
                (
                    {
                        "run_id": runs[0 if i < small else 1].pk,
                        "scenario_id": scenario.pk,
                        "index": i,
                        "topic": "the unit circle",
                        "status": "complete",
                    }
                    for i in range(n_dialogues)
                ),
            )
            cursor.execute(
                "SELECT id FROM generation_dialogue WHERE scenario_id = %s ORDER BY id",
                [scenario.pk],
            )
            ids = [row[0] for row in cursor.fetchall()]
            rng = random.Random(42)

            def turns():
                for d, dialogue_id in enumerate(ids):
                    for p in range(n_turns):
                        persona = student if p % 2 == 0 else teacher
                        text = _turn_text(rng, d, p)
                        yield {
                            "dialogue_id": dialogue_id,
                            "position": p,
                            "persona_id": persona.pk,
                            "side": persona.side,
                            "original_text": text if p % 7 else text + " (draft)",
                            "text": text,
                            "model": "bench-model",
                        }

            _copy_rows(cursor, Turn, turns())
            _copy_rows(
                cursor,
                DialogueReview,
                (
                    {
                        "dialogue_id": dialogue_id,
                        "status": "approved",
                        "decided_by_id": user.pk,
                        "decided_at": now,
                    }
                    for dialogue_id in ids
                ),
            )
            cursor.execute("ANALYZE")
    return {"runs": [r.pk for r in runs], "scenario": scenario.slug}


def _floor_sql(run_ids: list[int] | None) -> tuple[str, list]:
    from generation.models import Turn
    from review.export import ExportFilters, dialogues_exportable

    dialogues = dialogues_exportable(ExportFilters(run_ids=tuple(run_ids or ())))
    turns = (
        Turn.objects.filter(dialogue__in=dialogues.values("pk"), discarded_at__isnull=True)
        .order_by("dialogue_id", "position", "pk")
        .values_list("dialogue_id", "dialogue__scenario_id", "side", "text", "model")
    )
    return turns.query.sql_with_params()


def copy_floor(run_ids: list[int] | None, out_dir: Path) -> dict:
    from django.db import connection

    sql, params = _floor_sql(run_ids)
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        query = cursor.mogrify(sql, params)
        server_file = Path(tempfile.gettempdir()) / f"synthreview-bench-floor-{os.getpid()}.copy"
        start = time.perf_counter()
        cursor.execute(f"COPY ({query}) TO '{server_file}'")
        server = time.perf_counter() - start
        size = server_file.stat().st_size
        server_file.unlink()
        start = time.perf_counter()
        with (
            open(out_dir / "floor.copy", "wb") as out,
            cursor.copy(f"COPY ({query}) TO STDOUT") as copy,
        ):
            for block in copy:
                out.write(block)
        client = time.perf_counter() - start
    return {"server_s": server, "client_s": client, "bytes": size}


def child(fmt: str, run_ids: list[int] | None, out: str, scrub: bool) -> None:
    import django

    django.setup()
    from review.export import ExportFilters, ExportOptions, export_write

    start = time.perf_counter()
    result = export_write(
        filters=ExportFilters(run_ids=tuple(run_ids or ())),
        options=ExportOptions(fmt, include_system=True, scrub_pii=scrub),
        path=Path(out),
    )
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "wall_s": wall,
                "peak_rss_mb": peak_kb / 1024,
                "records": result.manifest["counts"]["records"],
                "dialogues": result.manifest["counts"]["dialogues_written"],
                "bytes": Path(out).stat().st_size,
                "pii_dialogues": result.manifest["pii"]["dialogues_with_pii"],
            }
        )
    )


def run_child(
    fmt: str, run_ids: list[int] | None, out: Path, *, scrub: bool = False, floor_dir: Path
) -> dict:
    """One export in a fresh process (clean peak RSS), `REPEATS` times, each right after a
    measure of the COPY floor: the machine's speed drifts over a run, so each export is
    compared with floors taken beside it. Best of each; the peak RSS is the worst."""
    cmd = [sys.executable, __file__, "--child", fmt, "--out", str(out)]
    if run_ids:
        cmd += ["--runs", ",".join(map(str, run_ids))]
    if scrub:
        cmd.append("--scrub")
    results, floors = [], []
    for _ in range(REPEATS):
        floors.append(copy_floor(None, floor_dir))
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        out.unlink()
    best = min(results, key=lambda r: r["wall_s"])
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    best["server_s"] = min(f["server_s"] for f in floors)
    best["client_s"] = min(f["client_s"] for f in floors)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogues", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--runs")
    parser.add_argument("--out")
    parser.add_argument("--scrub", action="store_true")
    args = parser.parse_args()
    run_ids = [int(x) for x in args.runs.split(",")] if args.runs else None
    if args.child:
        child(args.child, run_ids, args.out, args.scrub)
        return

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL database of its own (it is seeded).")
    # The benchmark database is disposable: recreated on --reseed, or when its schema no longer
    # migrates (migrations regenerated since it was seeded).
    _database_ensure(url, recreate=args.reseed)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import DatabaseError, connection

    from generation.models import GenerationRun, Scenario

    try:
        call_command("migrate", verbosity=0)
    except DatabaseError:
        connection.close()
        print("benchmark database does not migrate: recreating it")
        _database_ensure(url, recreate=True)
        call_command("migrate", verbosity=0)
    scenario = Scenario.objects.filter(slug="bench-trig").first()
    if scenario is not None and scenario.dialogues.count() != args.dialogues:
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE review_dialoguereview, generation_turn, generation_dialogue, "
                "generation_generationrun, generation_persona, generation_scenario CASCADE"
            )
        scenario = None
    if scenario is None:
        start = time.perf_counter()
        seed(args.dialogues, args.turns)
        print(
            f"seeded {args.dialogues} dialogues x {args.turns} turns in {time.perf_counter() - start:.1f}s"
        )
    runs = list(
        GenerationRun.objects.filter(scenario__slug="bench-trig")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    n_turns = args.dialogues * args.turns
    with tempfile.TemporaryDirectory(prefix="synthreview-bench-") as tmp:
        out_dir = Path(tmp)
        copy_floor(None, out_dir)  # warm the cache so the floor and exports read the same way
        size = copy_floor(None, out_dir)["bytes"]
        print(f"COPY floor: {n_turns} rows, {size / 1e6:.0f} MB")
        rows = []
        cases = [("openai", runs[:1], False), ("openai", None, False)]
        cases += [("sharegpt", None, False), ("dpo", None, False), ("openai", None, True)]
        for fmt, run_ids, scrub in cases:
            result = run_child(
                fmt, run_ids, out_dir / f"{fmt}.jsonl", scrub=scrub, floor_dir=out_dir
            )
            server, client = result["server_s"], result["client_s"]
            label = fmt + (" --scrub-pii" if scrub else "")
            rows.append(
                f"| {label} | {result['dialogues']:,} | {result['records']:,} | "
                f"{result['bytes'] / 1e6:.0f} MB | {server:.2f} s / {client:.2f} s | "
                f"{result['wall_s']:.2f} s | "
                f"{result['wall_s'] / server:.2f}x | {result['wall_s'] / client:.2f}x | "
                f"{result['peak_rss_mb']:.0f} MB | {result['pii_dialogues']:,} |"
            )
            print(rows[-1], flush=True)
        print()
        print(
            "| format | dialogues | records | size | COPY floor server / client | wall "
            "| / server COPY | / client COPY | peak RSS | dialogues with PII |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
