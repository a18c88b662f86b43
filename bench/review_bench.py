"""Review screen latency under load: gunicorn on this machine, PostgreSQL, 20 simulated experts.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench SECRET_KEY=bench \\
    .venv/bin/python bench/review_bench.py --reviewers 20 --iterations 30 --turns 60

Each simulated reviewer holds its own 60-turn dialogue (Markdown and maths in every turn, some
warnings and flags) and loops: GET the trivial /review/healthz/ view, GET the dialogue screen,
POST a turn correction (the htmx save, which answers with the turn and the review panel), and
with --queue-dialogues N, GET the queue page over N more dialogues (filters, search-free; page 1
and a page deep in the queue, by keyset cursor, in turn) and then its counts per filter (the
fragment the page loads after itself). They are timed separately from the
client side, and each is reported as p50/p95 and as a ratio to the trivial view served by the
same server in the same run (target: p95 <= 3x trivial). A single-reviewer pass first gives the
unloaded figures.

    .venv/bin/python bench/review_bench.py --reviewers 20 --iterations 30 --queue-dialogues 100000

Bench rows live under the scenario "bench-review" and are replaced on every run (the queue's
dialogues under "bench-queue" are kept while their number is unchanged); gunicorn
serves with DEBUG off and collected static files, like production. Not a test: figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "synthreview.settings")
os.environ.setdefault("SECRET_KEY", "review-bench-only")
os.environ["DEBUG"] = "0"
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
os.environ["SECURE_COOKIES"] = "0"  # plain HTTP on localhost

TURN_TEMPLATE = (
    "Let's check step {n} of dialogue {d}. We know **the Pythagorean identity** "
    "$\\sin^2 x + \\cos^2 x = 1$, so dividing by $\\cos^2 x$ gives\n\n"
    "$$\\tan^2 x + 1 = \\sec^2 x$$\n\n"
    "- for $x = 30^\\circ$: $\\tan^2 x = \\frac{{1}}{{3}}$\n"
    "- and $\\sec^2 x = \\frac{{4}}{{3}}$, which matches.\n\n"
    "Does that make sense, or should we try `x = 45°` next?"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_data(reviewers: int, turns: int) -> list[dict]:
    """Fresh bench scenario, `reviewers` users each holding one dialogue of `turns` turns."""
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.db import transaction
    from django.test import Client

    from generation.models import Dialogue, GenerationRun, Persona, Scenario, Side, Turn
    from review import services
    from review.models import REVIEWER_GROUP, Flag
    from review.selectors import QueueFilters

    call_command("migrate", verbosity=0)
    with transaction.atomic():
        old = Scenario.objects.filter(slug="bench-review").first()
        if old:
            Dialogue.objects.filter(scenario=old).delete()
            GenerationRun.objects.filter(scenario=old).delete()
            old.delete()
        User.objects.filter(username__startswith="bench-reviewer-").delete()
        scenario = Scenario.objects.create(
            slug="bench-review", name="Bench: trigonometry", opening_instruction="{topic}",
            topics=["identities"], max_turns=200,
        )  # fmt: skip
        personas = [
            Persona.objects.create(scenario=scenario, position=0, name="Teacher",
                                   side=Side.ASSISTANT, system_prompt="You teach maths."),
            Persona.objects.create(scenario=scenario, position=1, name="Student", side=Side.USER,
                                   system_prompt="You are a student.", opens=True),
        ]  # fmt: skip
        run = GenerationRun.objects.create(
            scenario=scenario, requested_count=reviewers, provider="openai"
        )
        group, _ = Group.objects.get_or_create(name=REVIEWER_GROUP)
        plan = []
        for i in range(reviewers):
            user = User.objects.create(username=f"bench-reviewer-{i}")
            user.groups.add(group)
            dialogue = Dialogue.objects.create(
                run=run, scenario=scenario, index=i, topic=f"identities {i}",
                status=Dialogue.Status.COMPLETE,
            )  # fmt: skip
            rows = [
                Turn(dialogue=dialogue, position=n, persona=personas[n % 2],
                     side=personas[n % 2].side, original_text=TURN_TEMPLATE.format(n=n, d=i),
                     text=TURN_TEMPLATE.format(n=n, d=i),
                     warnings=["repetition"] if n % 10 == 9 else [])
                for n in range(turns)
            ]  # fmt: skip
            Turn.objects.bulk_create(rows)
            created = list(Turn.objects.filter(dialogue=dialogue).order_by("position"))
            Flag.objects.bulk_create(
                Flag(turn=t, category="factual", created_by=user, note="check this")
                for t in created[5::15]
            )
            plan.append(
                {"user": user, "dialogue": dialogue.pk, "turn": created[0].pk, "version": 1}
            )
    only_bench = QueueFilters(scenario_id=scenario.pk)
    for entry in plan:
        claimed = services.review_claim_next(actor=entry["user"], filters=only_bench)
        assert claimed.pk == entry["dialogue"]
        client = Client()
        client.force_login(entry["user"])
        entry["session"] = client.cookies["sessionid"].value
        del entry["user"]
    return plan


def setup_queue(count: int) -> list[str]:
    """`count` complete two-turn dialogues under "bench-queue" (kept while the number is the
    same; a tenth with a warning, a tenth flagged), and the queue URLs the reviewers load."""
    from django.db import connection

    from generation.models import Dialogue, GenerationRun, Scenario
    from review.selectors import QUEUE_ORDERINGS
    from review.selectors.keyset import encode_cursor

    scenario = Scenario.objects.filter(slug="bench-queue").first()
    if scenario is None or scenario.dialogues.count() != count:
        if scenario is not None:
            Dialogue.objects.filter(scenario=scenario).delete()
            GenerationRun.objects.filter(scenario=scenario).delete()
            scenario.delete()
        _seed_queue(count)
        scenario = Scenario.objects.get(slug="bench-queue")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would soon after a bulk load
    deep = (
        Dialogue.objects.filter(scenario=scenario)
        .order_by(*QUEUE_ORDERINGS["queue"].fields)
        .values_list(*QUEUE_ORDERINGS["queue"].fields)[count // 2]
    )
    cursor = encode_cursor(list(deep))
    return [
        "/review/",
        f"/review/?scenario={scenario.pk}&warnings=no&flags=none&status=awaiting",
        f"/review/?scenario={scenario.pk}&warnings=no&status=all&after={cursor}",
        "/review/?assignee=none&sort=newest&flags=open",
    ]


def _seed_queue(count: int) -> None:
    from django.db import transaction

    from generation.models import Dialogue, GenerationRun, Persona, Scenario, Side, Turn
    from review.models import Flag

    with transaction.atomic():
        scenario = Scenario.objects.create(
            slug="bench-queue", name="Bench: queue", opening_instruction="{topic}",
            topics=["identities"], max_turns=200,
        )  # fmt: skip
        personas = [
            Persona.objects.create(scenario=scenario, position=0, name="Teacher",
                                   side=Side.ASSISTANT, system_prompt="You teach maths."),
            Persona.objects.create(scenario=scenario, position=1, name="Student", side=Side.USER,
                                   system_prompt="You are a student.", opens=True),
        ]  # fmt: skip
        run = GenerationRun.objects.create(
            scenario=scenario, requested_count=count, provider="openai"
        )
        batch = 5000
        for start in range(0, count, batch):
            dialogues = Dialogue.objects.bulk_create(
                Dialogue(run=run, scenario=scenario, index=i, topic=f"identities {i}",
                         status=Dialogue.Status.COMPLETE)
                for i in range(start, min(start + batch, count))
            )  # fmt: skip
            turns = Turn.objects.bulk_create(
                Turn(dialogue=d, position=n, persona=personas[n % 2], side=personas[n % 2].side,
                     original_text=TURN_TEMPLATE.format(n=n, d=d.index),
                     text=TURN_TEMPLATE.format(n=n, d=d.index),
                     warnings=["repetition"] if n == 1 and d.index % 10 == 3 else [])
                for d in dialogues for n in range(2)
            )  # fmt: skip
            Flag.objects.bulk_create(
                Flag(turn=t, category="factual", note="check") for t in turns[1::20]
            )


class Reviewer(threading.Thread):
    """One expert with a keep-alive connection; records latencies per kind of request."""

    def __init__(
        self, port: int, entry: dict, iterations: int, start: threading.Barrier, queue: list[str]
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.entry, self.iterations, self.start_barrier = port, entry, iterations, start
        self.queue = queue
        self.samples: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: list[str] = []
        csrf = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        self.headers = {
            "Cookie": f"sessionid={entry['session']}; csrftoken={csrf}",
            "X-CSRFToken": csrf,
        }

    def request(
        self, conn, kind: str, method: str, path: str, body: str | None = None, hx: bool = False
    ) -> int:
        headers = dict(self.headers)
        if hx:
            headers["HX-Request"] = "true"
        if body is not None:
            headers |= {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true",
                        "HX-Target": f"turn-{self.entry['turn']}"}  # fmt: skip
        started = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        self.samples[kind].append(time.perf_counter() - started)
        if response.status != 200:
            self.errors.append(f"{kind} {path}: HTTP {response.status}")
        return response.status

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # reported with the results
            self.errors.append(repr(exc))

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        d, t = self.entry["dialogue"], self.entry["turn"]
        self.start_barrier.wait()
        for i in range(self.iterations):
            self.request(conn, "trivial", "GET", "/review/healthz/")
            self.request(conn, "dialogue", "GET", f"/review/dialogues/{d}/")
            body = urlencode({"text": f"Corrected, pass {i}.", "version": self.entry["version"]})
            path = f"/review/dialogues/{d}/turns/{t}/edit/"
            if self.request(conn, "save", "POST", path, body) == 200:
                self.entry["version"] += 1  # the turn's version token, kept across passes
            if self.queue:
                page = self.queue[i % len(self.queue)]
                self.request(conn, "queue", "GET", page)
                # What the page loads after itself (htmx): the counts per filter.
                facets = page.replace("/review/", "/review/facets/", 1)
                self.request(conn, "facets", "GET", facets, hx=True)
        conn.close()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


KINDS = ("trivial", "dialogue", "save", "queue", "facets")


def measure(port: int, plan: list[dict], iterations: int, queue: list[str]) -> dict:
    barrier = threading.Barrier(len(plan))
    threads = [Reviewer(port, entry, iterations, barrier, queue) for entry in plan]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    errors = [e for t in threads for e in t.errors]
    if errors and not all(t.samples["save"] for t in threads):
        sys.exit(f"benchmark requests failed: {errors[:5]}")
    result: dict = {"reviewers": len(plan), "elapsed_s": round(elapsed, 2), "errors": errors[:5]}
    kinds = [kind for kind in KINDS if any(t.samples[kind] for t in threads)]
    for kind in kinds:
        values = [v for t in threads for v in t.samples[kind]]
        result[kind] = {
            "n": len(values),
            "p50_ms": round(percentile(values, 50) * 1000, 1),
            "p95_ms": round(percentile(values, 95) * 1000, 1),
        }
    for kind in kinds[1:]:
        for p in ("p50", "p95"):
            result[kind][f"{p}_ratio"] = round(
                result[kind][f"{p}_ms"] / result["trivial"][f"{p}_ms"], 2
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviewers", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--queue-dialogues", type=int, default=0)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL database for the benchmark.")

    static_root = tempfile.mkdtemp(prefix="synthreview-bench-static-")
    os.environ["STATIC_ROOT"] = static_root
    plan = setup_data(args.reviewers, args.turns)
    queue = setup_queue(args.queue_dialogues) if args.queue_dialogues else []
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, check=True
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "synthreview.wsgi", "-b", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--threads", str(args.threads),
         "--worker-class", "gthread", "--log-level", "warning"],
        cwd=ROOT,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        # Warm every worker (imports, template compilation, Markdown cache) before measuring.
        measure(port, plan, 3, queue)
        print(f"{os.cpu_count()} CPUs; gunicorn gthread {args.workers} workers x {args.threads} "
              f"threads; {args.turns}-turn dialogues")  # fmt: skip
        results = {
            "single": measure(port, plan[:1], args.iterations, queue),
            "loaded": measure(port, plan, args.iterations, queue),
        }
        for label, result in results.items():
            print(f"\n{label}: {result['reviewers']} reviewer(s), {result['elapsed_s']} s")
            for kind in (k for k in KINDS if k in result):
                r = result[kind]
                ratio = (f"  ratio p50 {r['p50_ratio']}x p95 {r['p95_ratio']}x"
                         if kind != "trivial" else "")  # fmt: skip
                print(
                    f"  {kind:9} n={r['n']:4} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms{ratio}"
                )
            if result["errors"]:
                print("  errors:", result["errors"])
        out = ROOT / "bench" / "out"
        out.mkdir(exist_ok=True)
        (out / "review.json").write_text(json.dumps(results, indent=2))
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
