"""Export benchmark: 100,000 approved dialogues x 10 turns (1M turns) from PostgreSQL, measured
the way a user runs it: whole processes, alternating with the floor.

    SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/exp_bench \\
        flock /tmp/bench.lock .venv/bin/python bench/export_bench.py [--dialogues 100000] \\
        [--turns 10] [--reseed] [--code DIR]

The database named by DATABASE_URL is created if missing, migrated and seeded with COPY (the
seed is reused on later runs unless --reseed). For each case (`openai` over the first 10% of
the dialogues, then `openai`, `sharegpt`, `dpo` and `openai --scrub-pii` over all of them), in
turn, `REPEATS` times:

- the floor: `psql -c "COPY (...) TO STDOUT" > file` of the same turn rows (approved dialogues'
  live turns, in export order: the export's query);
- `manage.py export_dataset --format ... --output file` of the checkout in --code (this one by
  default; point it at a `git worktree` of another commit to measure that code on the same
  data and machine), its wall time and its peak RSS (`wait4`).

Reported per case: the median floor and export, the median of each pair's export/floor ratio
with its range (the machine's speed drifts, so each export is compared with the floor taken
beside it), and the worst peak RSS.

Use a database of its own: the seed is large and the run drops nothing else.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 5

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


def _floor_sql() -> str:
    """The export's own turn query, as one SQL string psql can run."""
    from django.db import connection

    from generation.models import Turn
    from review.export import ExportFilters, dialogues_exportable

    dialogues = dialogues_exportable(ExportFilters())
    turns = (
        Turn.objects.filter(dialogue__in=dialogues.values("pk"), discarded_at__isnull=True)
        .order_by("dialogue_id", "position", "pk")
        .values_list("dialogue_id", "dialogue__scenario_id", "side", "text", "model")
    )
    sql, params = turns.query.sql_with_params()
    with connection.cursor() as cursor:
        return cursor.cursor.mogrify(sql, params)


def _timed(cmd: list[str], out: Path, **kwargs) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process writing its stdout to `out`."""
    with open(out, "wb") as stdout:
        start = time.perf_counter()
        process = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, **kwargs)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    stderr = process.stderr.read().decode() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({process.returncode}):\n{stderr}")
    return wall, usage.ru_maxrss / 1024


def copy_floor(url: str, sql: str, out: Path) -> float:
    return _timed(["psql", url, "-X", "-q", "-c", f"COPY ({sql}) TO STDOUT"], out)[0]


def export_process(code: Path, args: list[str], out: Path, media: Path) -> tuple[float, float]:
    env = {**os.environ, "SYNTHREVIEW_ENV_FILE": "", "MEDIA_ROOT": str(media)}
    cmd = [sys.executable, str(code / "manage.py"), "export_dataset", *args, "--output", str(out)]
    wall, rss = _timed(cmd, out.with_suffix(".stdout"), cwd=code, env=env)
    return wall, rss


def run_case(url: str, sql: str, code: Path, args: list[str], tmp: Path) -> dict:
    """`REPEATS` pairs of (floor, export): the medians, the pairs' ratios, the worst peak RSS."""
    floors, walls, peaks = [], [], []
    for _ in range(REPEATS):
        floors.append(copy_floor(url, sql, tmp / "floor.copy"))
        media = tmp / "media"
        wall, rss = export_process(code, args, tmp / "out.jsonl", media)
        walls.append(wall)
        peaks.append(rss)
        size = (tmp / "out.jsonl").stat().st_size
        for path in [*tmp.glob("out*"), *media.rglob("*.json*")]:
            path.unlink()
    ratios = [wall / floor for wall, floor in zip(walls, floors, strict=True)]
    return {
        "floor": statistics.median(floors),
        "wall": statistics.median(walls),
        "ratio": statistics.median(ratios),
        "ratios": (min(ratios), max(ratios)),
        "rss": max(peaks),
        "bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogues", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--code", type=Path, default=ROOT, help="The checkout to measure.")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL database of its own (it is seeded).")
    runs = _prepare(url, args)
    sql = _floor_sql()
    code = args.code.resolve()
    cases = [(["--format", "openai", "--run", str(runs[0])], "openai 10k")]
    cases += [(["--format", fmt], fmt) for fmt in ("openai", "sharegpt", "dpo")]
    cases += [(["--format", "openai", "--scrub-pii"], "openai --scrub-pii")]
    print(f"code {code}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| case | size | COPY floor | export | ratio | peak RSS |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="synthreview-bench-") as tmp:
        copy_floor(url, sql, Path(tmp) / "floor.copy")  # warm the cache for both
        for case_args, label in cases:
            result = run_case(url, sql, code, case_args, Path(tmp))
            low, high = result["ratios"]
            print(
                f"| {label} | {result['bytes'] / 1e6:.0f} MB | {result['floor']:.2f} s "
                f"| {result['wall']:.2f} s | {result['ratio']:.2f}x ({low:.2f}-{high:.2f}) "
                f"| {result['rss']:.0f} MB |",
                flush=True,
            )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _prepare(url: str, args: argparse.Namespace) -> list[int]:
    """Create, migrate and seed the benchmark database as needed; the two runs' ids."""
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
        print(f"seeded {args.dialogues} x {args.turns} turns in {time.perf_counter() - start:.0f}s")
    return list(
        GenerationRun.objects.filter(scenario__slug="bench-trig")
        .order_by("pk")
        .values_list("pk", flat=True)
    )


if __name__ == "__main__":
    main()
