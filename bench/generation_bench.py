"""Generation throughput benchmark: one worker process against the fake OpenAI server.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/3 SECRET_KEY=bench \\
    .venv/bin/python bench/generation_bench.py --dialogues 500 --turns 6 --latency 0.5 \\
        --in-flight 64 256

For each in-flight limit: a run of N dialogues x T turns with max_in_flight = the limit (the
most LLM requests in flight), which keeps limit + ceil(limit x headroom) dialogues open (the
window; SYNTHREVIEW_DIALOGUE_HEADROOM or --headroom), and workers started with `--pool gevent
--concurrency <2 x window / workers>` (or `--pool threads --concurrency <window / workers>`;
--concurrency overrides). Reports dialogues/min, turns/s,
efficiency = turns/s / (in_flight / latency), per-turn overhead (time between a dialogue's
consecutive turns minus the LLM call's own latency: database writes, lease renewal, task
hand-off), the hand-off of a window slot to the next dialogue, the worker's CPU and peak RSS,
the most concurrent requests the fake server saw (the script fails if that exceeds the
limit), and a CPU speed reference (`cpu_reference_ms`: a fixed pure-Python workload timed
just before the run), since the machine's speed varies from run to run. Not a test: figures
go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "synthreview.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dialogues", type=int, default=500)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[64, 256])
    parser.add_argument(
        "--headroom",
        type=float,
        default=None,
        help="Dialogues open beyond the in-flight limit, as a fraction (0.5: 64 -> 96); "
        "default: SYNTHREVIEW_DIALOGUE_HEADROOM.",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="Pool size per worker process (default: the window split evenly over the "
        "workers; twice that for gevent, whose greenlets cost nothing idle).",
    )
    parser.add_argument(
        "--pool",
        choices=["gevent", "threads"],
        default="gevent",
        help="Celery pool of each worker process.",
    )
    parser.add_argument(
        "--worker-arg", action="append", default=[], help="Extra `celery worker` argument."
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Worker processes sharing the in-flight limit (the pool size split evenly).",
    )
    parser.add_argument("--port", type=int, default=0, help="Fake server port (0: a free one).")
    args = parser.parse_args()

    if not os.environ.get("DATABASE_URL") or not os.environ.get("CELERY_BROKER_URL"):
        sys.exit("Set DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis).")
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.tooling.fake_openai", "--port", str(args.port),
         "--latency", str(args.latency)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert fake.stdout is not None
    banner = fake.stdout.readline()  # "fake OpenAI server on http://127.0.0.1:PORT/v1 ..."
    if "server on" not in banner:
        sys.exit(f"fake server did not start: {banner}{fake.stdout.read()}")
    fake_url = banner.split(" on ")[1].split()[0]
    os.environ["OPENAI_BASE_URL"] = fake_url
    os.environ.setdefault("OPENAI_API_KEY", "")
    if args.headroom is not None:
        # Read by this process's dispatch and inherited by the workers (their sweep tops up).
        os.environ["SYNTHREVIEW_DIALOGUE_HEADROOM"] = str(args.headroom)

    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        print(f"{os.cpu_count()} CPUs; {args.dialogues} dialogues x {args.turns} turns; "
              f"latency {args.latency}s")  # fmt: skip
        for limit in args.in_flight:
            report(measure(limit, args, fake_url))
    finally:
        fake.terminate()
        fake.wait(10)


def measure(limit: int, args, fake_url: str) -> dict[str, float]:
    from django.conf import settings
    from django.db import connection

    from generation import services
    from generation.models import GenerationRun, Persona, Scenario, Side, Turn
    from tests.tooling.workers import CeleryWorker, unique_queue

    queue = unique_queue("bench")
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    scenario, _ = Scenario.objects.update_or_create(
        slug="bench",
        defaults={
            "name": "Benchmark",
            "opening_instruction": "Talk about {topic}.",
            "topics": ["alpha", "beta", "gamma"],
            "min_turns": args.turns,
            "max_turns": args.turns,
            "end_marker": "",
        },
    )
    for position, side in ((0, Side.ASSISTANT), (1, Side.USER)):
        Persona.objects.update_or_create(
            scenario=scenario, position=position,
            defaults={"name": f"P{position}", "side": side, "opens": position == 1,
                      "system_prompt": "You are a benchmark persona.", "model": "fake-model"},
        )  # fmt: skip
    window = services.run_window(max_in_flight=limit)
    concurrency = args.concurrency or -(
        -window * (2 if args.pool == "gevent" else 1) // args.workers
    )
    cpu_reference = cpu_reference_ms()
    workers = [
        CeleryWorker(
            queue=queue,
            pool=args.pool,
            concurrency=concurrency,
            extra_args=args.worker_arg,
            env={
                "OPENAI_BASE_URL": fake_url,
                "LOG_LEVEL": "WARNING",
                "DATABASE_URL": os.environ["DATABASE_URL"],
            },
        )  # fmt: skip
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()
    fake_stats(fake_url, reset=True)
    try:
        run = services.run_launch(scenario=scenario, count=args.dialogues, max_in_flight=limit)
        peak_rss = 0
        while True:
            run.refresh_from_db()
            peak_rss = max(peak_rss, sum(rss_kib(w.pid) for w in workers))
            if run.status not in GenerationRun.ACTIVE_STATUSES:
                break
            time.sleep(0.5)
        peak_rss = max(peak_rss, sum(hwm_kib(w.pid) for w in workers))
        cpu_seconds = sum(cpu_seconds_of(w.pid) for w in workers)
        server = fake_stats(fake_url)
    finally:
        for worker in workers:
            worker.stop()
        connection.close()
    turns = list(
        Turn.objects.filter(dialogue__run=run)
        .order_by("dialogue_id", "position")
        .values_list("dialogue_id", "created_at", "latency_ms")
    )
    first = min(t[1] for t in turns)
    last = max(t[1] for t in turns)
    # The first turns complete one latency after dispatch: count the span from launch.
    span = (
        (last - run.started_at).total_seconds()
        if run.started_at
        else (last - first).total_seconds()
    )
    overheads = []
    for previous, current in zip(turns, turns[1:], strict=False):
        if previous[0] == current[0]:
            gap_ms = (current[1] - previous[1]).total_seconds() * 1000
            overheads.append(gap_ms - current[2])
    turns_per_s = len(turns) / span
    # Steady state: from one dialogue length after the start (the window is full) until the
    # last dialogue is dispatched (after that the window drains by design).
    from django.db.models import Max

    last_dispatch = run.dialogues.aggregate(m=Max("dispatched_at"))["m"]
    steady_from = run.started_at + timedelta(seconds=args.turns * args.latency)
    steady = [t for t in turns if steady_from <= t[1] <= last_dispatch]
    steady_seconds = (last_dispatch - steady_from).total_seconds()
    steady_turns_per_s = len(steady) / steady_seconds if steady_seconds > 1 else float("nan")
    # Hand-off of a window slot, for dialogues that waited for one: the predecessor's finishing
    # transaction stamps dispatched_at; the task's lease acquire stamps updated_at; the first
    # LLM call starts one latency before the first turn is saved.
    first_turn = {}
    for dialogue_id, created_at, latency_ms in turns:
        first_turn.setdefault(dialogue_id, created_at - timedelta(milliseconds=latency_ms))
    queue_ms, setup_ms = [], []
    for pk, dispatched_at, acquired_at in run.dialogues.filter(index__gte=window).values_list(
        "pk", "dispatched_at", "updated_at"
    ):
        if pk in first_turn:
            queue_ms.append((acquired_at - dispatched_at).total_seconds() * 1000)
            setup_ms.append((first_turn[pk] - acquired_at).total_seconds() * 1000)
    ceiling = limit / args.latency
    first_call_s, full_s = _ramp(turns, run.started_at, full=math.ceil(limit * 0.9))
    return {
        "first_call_ms": first_call_s * 1000,
        "full_ms": full_s * 1000,
        "tail_s": (last - last_dispatch).total_seconds(),
        "server_peak_in_flight": server["peak_in_flight"],
        "handoff_queue_ms": statistics.median(queue_ms) if queue_ms else float("nan"),
        "handoff_setup_ms": statistics.median(setup_ms) if setup_ms else float("nan"),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "in_flight": limit,
        "window": window,
        "headroom": settings.SYNTHREVIEW_DIALOGUE_HEADROOM,
        "gated": services.requests_gated(),
        "concurrency": concurrency,
        "pool": args.pool,
        "cpu_reference_ms": cpu_reference,
        "workers": args.workers,
        "status": run.status,
        "dialogues": run.done_count,
        "failed": run.failed_count,
        "turns": len(turns),
        "seconds": span,
        "dialogues_per_min": run.done_count / span * 60,
        "turns_per_s": turns_per_s,
        "efficiency": turns_per_s / ceiling,
        "steady_efficiency": steady_turns_per_s / ceiling,
        "steady_seconds": steady_seconds,
        "overhead_median_ms": statistics.median(overheads),
        "overhead_p95_ms": statistics.quantiles(overheads, n=20)[18],
        "llm_latency_median_ms": statistics.median(t[2] for t in turns),
        "peak_rss_mib": peak_rss / 1024,
        "worker_cpu_ms_per_turn": cpu_seconds * 1000 / max(1, len(turns)),
        "worker_cpu_share": cpu_seconds / span,
    }


def _ramp(turns: list, started_at, *, full: int) -> tuple[float, float]:
    """(seconds from the run's start to its first call, to `full` calls in flight at once);
    each call spans one latency before its turn was saved."""
    events = []
    for _, created_at, latency_ms in turns:
        end = (created_at - started_at).total_seconds()
        events += [(end - latency_ms / 1000, 1), (end, -1)]
    events.sort()
    in_flight, full_at = 0, float("nan")
    for moment, change in events:
        in_flight += change
        if in_flight >= full:
            full_at = moment
            break
    return events[0][0], full_at


def cpu_reference_ms() -> float:
    """Best of 5 timings of a fixed pure-Python loop (ms): how fast this machine is right now."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i & 7
        best = min(best, time.perf_counter() - started)
    return best * 1000


def fake_stats(fake_url: str, *, reset: bool = False) -> dict:
    """The fake server's request counters; reset=True starts a new peak-in-flight window."""
    url = fake_url.removesuffix("/v1") + "/_fake/stats"
    request = urllib.request.Request(url, method="POST" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time of a process (every pool but prefork runs in one process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    return _status_field(pid, "VmRSS:")


def hwm_kib(pid: int) -> int:
    return _status_field(pid, "VmHWM:")


def _status_field(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def report(r: dict) -> None:
    print(
        f"in flight {r['in_flight']:>4}, window {r['window']} (headroom {r['headroom']:g}, "
        f"request gate {'on' if r['gated'] else 'off'}), {r['workers']} worker process(es) x "
        f"{r['concurrency']} ({r['pool']}): {r['dialogues']} dialogues ({r['failed']} failed, {r['status']}), "
        f"{r['turns']} turns in {r['seconds']:.1f}s -> {r['dialogues_per_min']:.0f} dialogues/min, "
        f"{r['turns_per_s']:.1f} turns/s, efficiency {r['efficiency']:.1%} "
        f"(steady state {r['steady_efficiency']:.1%} over {r['steady_seconds']:.0f}s); first call after "
        f"{r['first_call_ms']:.0f} ms, 90% of the limit in flight after {r['full_ms']:.0f} ms, "
        f"{r['tail_s']:.1f}s from the last dispatch to the end; per-turn overhead "
        f"median {r['overhead_median_ms']:.0f} ms (p95 {r['overhead_p95_ms']:.0f} ms); "
        f"LLM latency median {r['llm_latency_median_ms']:.0f} ms; worker peak RSS {r['peak_rss_mib']:.0f} MiB; "
        f"worker CPU {r['worker_cpu_ms_per_turn']:.1f} ms/turn ({r['worker_cpu_share']:.0%} of a core); "
        f"hand-off median {r['handoff_queue_ms']:.0f} ms to the task + {r['handoff_setup_ms']:.0f} ms to "
        f"its first call; server saw at most {r['server_peak_in_flight']} concurrent requests "
        f"(limit {r['in_flight']}: {'OK' if r['server_peak_in_flight'] <= r['in_flight'] else 'EXCEEDED'}); "
        f"load average {r['load_average']}; CPU reference {r['cpu_reference_ms']:.0f} ms",
        flush=True,
    )
    if r["server_peak_in_flight"] > r["in_flight"]:
        sys.exit(f"the in-flight limit {r['in_flight']} was exceeded")


if __name__ == "__main__":
    main()
