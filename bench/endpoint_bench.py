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
the limits, the share of calls answered 429, failed dialogues, and over how many seconds the
first window of dialogues started (`generation/engine/admission.py`); then where the time went,
from the server's counters and the endpoint's pacing sampled every 0.2 s (`timeline`).
Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
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
    from django.db.models import Max, Min

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
    samples: list[dict] = []
    done = threading.Event()
    try:
        for worker in workers:
            worker.start()
        fake_stats(url, reset=True)
        run = services.run_launch(scenario=scenario, count=args.dialogues,
                                  max_in_flight=args.in_flight)  # fmt: skip
        sampler = threading.Thread(
            target=sample, args=(url, endpoint if mode != "unpaced" else None, run.pk, done,
                                 samples), daemon=True)  # fmt: skip
        sampler.start()
        while True:
            run.refresh_from_db()
            if run.status not in GenerationRun.ACTIVE_STATUSES:
                break
            time.sleep(0.5)
        server = fake_stats(url)
    finally:
        done.set()
        for worker in workers:
            worker.stop()
        fake.terminate()
        fake.wait(10)
        connection.close()
    last = Turn.objects.filter(dialogue__run=run).aggregate(m=Max("created_at"))["m"]
    span = (last - run.started_at).total_seconds()
    first = run.dialogues.filter(index__lt=window).aggregate(a=Min("dispatched_at"),
                                                             b=Max("dispatched_at"))  # fmt: skip
    minutes = span / 60
    return {
        "span": span,
        "window": window,
        "window_spread": (first["b"] - first["a"]).total_seconds(),
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
        "retry_after_seconds": server.get("retry_after_seconds", 0.0),
        "timeline": timeline(samples, args),
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
        f"load {r['load_average']}; CPU reference {r['cpu_reference_ms']:.0f} ms; "
        f"Retry-After sent {r['retry_after_seconds']:.2f} s in all; the first "
        f"{r['window']} dialogues started over {r['window_spread']:.1f} s",
        flush=True,
    )
    print(r["timeline"], flush=True)


SAMPLE_SECONDS = 0.2


def sample(url: str, endpoint, run_id: int, done: threading.Event, samples: list) -> None:
    """Every SAMPLE_SECONDS: the server's counters and (paced modes) the endpoint's pacing."""
    from generation.engine.pacing import Limits, pacing_snapshot

    limits = Limits.of(endpoint) if endpoint is not None else None
    start = time.monotonic()
    while not done.is_set():
        server = fake_stats(url)
        row = {"t": time.monotonic() - start, "done": server["completed"], "tok": server["tokens"],
               "r429": server["rate_limited"], "server_in_flight": server["in_flight"]}  # fmt: skip
        if limits is not None:
            pacing = pacing_snapshot(limits=limits, run_id=run_id)
            row.update(cap=pacing.concurrency_cap, cooling=pacing.cooldown_seconds > 0,
                       holders=pacing.in_flight, queued=queued_seconds(limits))  # fmt: skip
        samples.append(row)
        done.wait(SAMPLE_SECONDS)


def queued_seconds(limits) -> float:
    """Seconds of calls already booked ahead in the endpoint's request and token buckets (the
    larger; 0 when a bucket has budget left)."""
    from generation.engine.pacing import _pace_connection, state_key

    client = _pace_connection(os.environ["CELERY_BROKER_URL"])[0]
    seconds, micros = client.time()
    now = seconds * 1000 + micros // 1000
    state = {k.decode(): float(v) for k, v in client.hgetall(state_key(limits.endpoint_key)).items()
             if k in (b"rl", b"rt", b"tl", b"tt")}  # fmt: skip
    queued = 0.0
    for level, at, limit in (("rl", "rt", limits.requests_per_minute),
                             ("tl", "tt", limits.tokens_per_minute)):  # fmt: skip
        if limit and level in state:
            now_level = state[level] + (now - state[at]) * limit / 60000
            queued = max(queued, -now_level * 60 / limit)
    return queued


def busier_share(samples: list[dict], args, step: float = 2.0) -> float:
    """The mean over `step`-second slices of the larger of the two budgets' shares used."""
    shares, previous = [], samples[0]
    for row in samples[1:]:
        if row["t"] - previous["t"] >= step:
            seconds = row["t"] - previous["t"]
            shares.append(max((row["done"] - previous["done"]) / seconds / (args.rpm / 60),
                              (row["tok"] - previous["tok"]) / seconds / (args.tpm / 60)))  # fmt: skip
            previous = row
    return sum(shares) / max(1, len(shares))


def timeline(samples: list[dict], args, step: float = 10.0) -> str:
    """Where the time goes: per `step` seconds, calls answered and their tokens per second
    against the limits, 429s, the concurrency cap (mean, min), calls in flight at the server
    and in the endpoint's slots, seconds of calls booked ahead in the buckets; then the start
    (time to the first 5 % of the calls), the tail (time for the last 5 %), the share of
    samples that found the endpoint paused by a Retry-After or its cap under 14, and how busy
    the busier of the two budgets was (2-second slices): the requests bind while dialogues are
    in their first turns, the tokens in their last ones."""
    if len(samples) < 2:
        return "  (no samples)"
    per_second = args.rpm / 60
    lines = [
        "  t(s)  calls/s (of limit) tokens/s (of limit)  429s  cap mean/min"
        "  in flight server/slots  booked s"
    ]
    t0, end = 0.0, samples[-1]["t"]
    previous = samples[0]
    while t0 < end:
        rows = [s for s in samples if t0 <= s["t"] < t0 + step] or [previous]
        last = rows[-1]
        seconds = max(1e-9, last["t"] - previous["t"])
        rate = (last["done"] - previous["done"]) / seconds
        tokens = (last["tok"] - previous["tok"]) / seconds
        caps = [s["cap"] if s.get("cap") is not None else args.in_flight for s in rows]
        lines.append(
            f"  {t0:4.0f}  {rate:5.1f} ({rate / per_second:4.0%}) {tokens:6.0f} ({tokens * 60 / args.tpm:4.0%})"
            f"  {last['r429'] - previous['r429']:4d}"
            f"  {sum(caps) / len(caps):5.1f}/{min(caps):3.0f}"
            f"  {sum(s['server_in_flight'] for s in rows) / len(rows):5.1f}/"
            f"{sum(s.get('holders', 0) for s in rows) / len(rows):5.1f}"
            f"  {sum(s.get('queued', 0) for s in rows) / len(rows):5.2f}"
        )  # fmt: skip
        previous = last
        t0 += step
    total = samples[-1]["done"]
    ramp = next((s["t"] for s in samples if s["done"] >= 0.05 * total), 0.0)
    tail = end - next(s["t"] for s in samples if s["done"] >= 0.95 * total)
    cooling = sum(1 for s in samples if s.get("cooling")) / len(samples)
    below = sum(1 for s in samples if s.get("cap") is not None and s["cap"] < 14) / len(samples)
    lines.append(f"  the busier budget {busier_share(samples, args):.1%} used")
    lines.append(
        f"  first 5 % of calls by {ramp:.1f} s; last 5 % took {tail:.1f} s; paused by a "
        f"Retry-After in {cooling:.1%} of samples; cap under 14 in {below:.1%} of samples"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
