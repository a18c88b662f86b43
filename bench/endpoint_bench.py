"""Endpoint pacing benchmark: a run against a rate-limited fake OpenAI server, paced or not.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/3 SECRET_KEY=bench \\
    flock /tmp/bench.lock .venv/bin/python bench/endpoint_bench.py --dialogues 500 --turns 6 \\
        --workers 2 --modes paced unpaced

Each mode runs N dialogues x T turns with 2 worker processes (gevent) and `max_in_flight` 64
against its own fake server (`tests/tooling/fake_openai.py`, 500 ms per call) that allows each
key --rpm requests and --tpm tokens a minute, enforced over --burst-seconds (1: per second, as
providers may quantise a per-minute limit), answering 429 with Retry-After beyond that:

- `paced`: the endpoint is configured with the server's limits, and the server sends its
  x-ratelimit-* headers;
- `learned`: no limits configured, the pacing learns them from the headers;
- `no-headers`: limits configured, the server sends no headers;
- `unpaced`: the engine as before endpoints (`bench/unpaced_celery.py`: each run's request
  cap and retries only), headers sent.

Reports requests and tokens per minute over the run (from its start to its last turn) against
the limits, the share of calls answered 429, and failed dialogues. Figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from generation_bench import cpu_reference_ms, fake_stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "synthreview.settings")

MODES = ("paced", "learned", "no-headers", "unpaced")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dialogues", type=int, default=500)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rpm", type=int, default=1200)
    parser.add_argument("--tpm", type=int, default=300_000)
    parser.add_argument("--burst-seconds", type=float, default=1.0)
    parser.add_argument("--reply-words", type=int, default=70)
    parser.add_argument("--max-tokens", type=int, default=150, help="Each persona's max_tokens.")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["paced", "unpaced"])
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") or not os.environ.get("CELERY_BROKER_URL"):
        sys.exit("Set DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis).")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(f"{os.cpu_count()} CPUs; {args.dialogues} dialogues x {args.turns} turns; limits "
          f"{args.rpm} requests/min, {args.tpm} tokens/min over {args.burst_seconds:g} s; "
          f"latency {args.latency}s; {args.workers} workers; {args.in_flight} in flight")  # fmt: skip
    for mode in args.modes:
        report(mode, measure(mode, args))


def fake_server(args, *, headers: bool) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable, "-m", "tests.tooling.fake_openai", "--port", "0",
        "--latency", str(args.latency), "--rpm", str(args.rpm), "--tpm", str(args.tpm),
        "--burst-seconds", str(args.burst_seconds), "--reply-words", str(args.reply_words),
    ]  # fmt: skip
    if not headers:
        command.append("--no-rate-headers")
    fake = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    assert fake.stdout is not None
    banner = fake.stdout.readline()
    if "server on" not in banner:
        sys.exit(f"fake server did not start: {banner}{fake.stdout.read()}")
    return fake, banner.split(" on ")[1].split()[0]


def bench_scenario(endpoint, args):
    from generation.models import Persona, Scenario, Side

    scenario, _ = Scenario.objects.update_or_create(
        slug="endpoint-bench",
        defaults={"name": "Endpoint benchmark", "opening_instruction": "Talk about {topic}.",
                  "topics": ["alpha", "beta", "gamma"], "min_turns": args.turns,
                  "max_turns": args.turns, "end_marker": ""},
    )  # fmt: skip
    for position, side in ((0, Side.ASSISTANT), (1, Side.USER)):
        Persona.objects.update_or_create(
            scenario=scenario, position=position,
            defaults={"name": f"P{position}", "side": side, "opens": position == 1,
                      "system_prompt": "You are a benchmark persona.", "model": "fake-model",
                      "endpoint": endpoint, "max_tokens": args.max_tokens},
        )  # fmt: skip
    return scenario


def measure(mode: str, args) -> dict:
    from django.conf import settings
    from django.db import connection
    from django.db.models import Max

    from generation import services
    from generation.models import Endpoint, GenerationRun, Turn
    from tests.tooling.workers import CeleryWorker, unique_queue

    fake, url = fake_server(args, headers=mode != "no-headers")
    configured = mode in ("paced", "no-headers")
    endpoint = Endpoint.objects.create(
        name=f"bench-{mode}-{int(time.time())}", base_url=url,
        requests_per_minute=args.rpm if configured else None,
        tokens_per_minute=args.tpm if configured else None,
    )  # fmt: skip
    scenario = bench_scenario(endpoint, args)
    queue = unique_queue("endpoints")
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    window = services.run_window(max_in_flight=args.in_flight)
    app = "bench.unpaced_celery" if mode == "unpaced" else "synthreview"
    cpu_reference = cpu_reference_ms()
    workers = [
        CeleryWorker(queue=queue, pool="gevent", concurrency=-(-2 * window // args.workers),
                     app=app, env={"LOG_LEVEL": "WARNING",
                                   "DATABASE_URL": os.environ["DATABASE_URL"]})
        for _ in range(args.workers)
    ]  # fmt: skip
    try:
        for worker in workers:
            worker.start()
        fake_stats(url, reset=True)
        run = services.run_launch(scenario=scenario, count=args.dialogues,
                                  max_in_flight=args.in_flight)  # fmt: skip
        while True:
            run.refresh_from_db()
            if run.status not in GenerationRun.ACTIVE_STATUSES:
                break
            time.sleep(0.5)
        server = fake_stats(url)
    finally:
        for worker in workers:
            worker.stop()
        fake.terminate()
        fake.wait(10)
        connection.close()
    last = Turn.objects.filter(dialogue__run=run).aggregate(m=Max("created_at"))["m"]
    span = (last - run.started_at).total_seconds()
    minutes = span / 60
    return {
        "span": span,
        "dialogues": run.done_count,
        "failed": run.failed_count,
        "calls": server["requests"],
        "completed": server["completed"],
        "rate_limited": server["rate_limited"],
        "requests_per_min": server["completed"] / minutes,
        "tokens_per_min": server["tokens"] / minutes,
        "rpm_share": server["completed"] / minutes / args.rpm,
        "tpm_share": server["tokens"] / minutes / args.tpm,
        "share_429": server["rate_limited"] / max(1, server["requests"]),
        "peak_in_flight": server["peak_in_flight"],
        "cpu_reference_ms": cpu_reference,
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def report(mode: str, r: dict) -> None:
    print(
        f"{mode}: {r['dialogues']} dialogues ({r['failed']} failed) in {r['span']:.1f}s; "
        f"{r['completed']} calls answered, {r['rate_limited']} answered 429 of {r['calls']} "
        f"({r['share_429']:.2%}); {r['requests_per_min']:.0f} requests/min "
        f"({r['rpm_share']:.1%} of the limit), {r['tokens_per_min']:.0f} tokens/min "
        f"({r['tpm_share']:.1%}); server peak {r['peak_in_flight']} in flight; "
        f"load {r['load_average']}; CPU reference {r['cpu_reference_ms']:.0f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
