"""`manage.py generate --scenario SLUG --count N [--wait]`: launch a run from the terminal."""

from __future__ import annotations

import sys
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from generation import selectors, services, variables
from generation.models import GenerationRun, Scenario


def progress_line(run: GenerationRun, width: int = 30) -> str:
    progress = selectors.run_progress(run=run)
    filled = int(width * progress.finished / progress.requested) if progress.requested else width
    bar = "#" * filled + "-" * (width - filled)
    eta = ""
    if progress.eta is not None:
        eta = f"  ETA {int(progress.eta.total_seconds())}s"
    return (
        f"[{bar}] {progress.percent:3d}%  {progress.done} done, {progress.failed} failed, "
        f"{progress.generating} generating, {progress.waiting} waiting{eta}"
    )


class Command(BaseCommand):
    help = "Launch a generation run for a scenario (optionally wait, with a progress bar)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scenario", required=True, help="Scenario slug.")
        parser.add_argument("--count", type=int, required=True, help="Number of dialogues.")
        parser.add_argument("--wait", action="store_true", help="Wait and show progress.")
        parser.add_argument("--model", default="", help="Model override for both personas.")
        parser.add_argument(
            "--endpoint", default="", help="Endpoint (by name) both personas call instead."
        )
        parser.add_argument("--temperature", type=float, default=None)
        parser.add_argument("--max-in-flight", type=int, default=64)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--balanced",
            action="store_true",
            help="Every combination of the scenario's variable values equally often.",
        )
        parser.add_argument(
            "--oversample",
            action="append",
            default=[],
            metavar="VARIABLE=VALUE*N",
            help="Generate this variable value N times as often (repeatable).",
        )
        parser.add_argument("--poll", type=float, default=1.0, help=argparse_suppress())

    def handle(self, *args, **options) -> None:
        slug = options["scenario"]
        try:
            scenario = Scenario.objects.get(slug=slug)
        except Scenario.DoesNotExist:
            known = ", ".join(Scenario.objects.order_by("slug").values_list("slug", flat=True))
            raise CommandError(
                f"Unknown scenario {slug!r}. Known: {known or 'none (run manage.py seed_demo)'}."
            ) from None
        if options["count"] < 1:
            raise CommandError("--count must be at least 1.")
        temperature = options["temperature"]
        if temperature is not None and not 0 <= temperature <= 2:
            raise CommandError("--temperature must be between 0 and 2.")
        if options["max_in_flight"] < 1:
            raise CommandError("--max-in-flight must be at least 1.")
        try:
            oversample = variables.parse_oversample(
                "\n".join(options["oversample"]), variables.variables_of(scenario.variables)
            )
            endpoint = None
            if options["endpoint"]:
                endpoint = services.endpoint_by_name(options["endpoint"])
            launch = {"endpoint_override": endpoint, "model_override": options["model"]}
            uses = services.endpoints_check(scenario=scenario, **launch)
            run = services.run_launch(
                scenario=scenario,
                count=options["count"],
                temperature_override=temperature,
                max_in_flight=options["max_in_flight"],
                seed=options["seed"],
                variable_coverage=GenerationRun.VariableCoverage.BALANCED
                if options["balanced"]
                else GenerationRun.VariableCoverage.SAMPLED,
                oversample=oversample,
                **launch,
            )
        except (
            services.ScenarioNotReady,
            services.EndpointNotReady,
            variables.VariableError,
        ) as exc:
            raise CommandError(str(exc)) from None
        for use in uses:
            self.stdout.write(endpoint_line(use))
        self.stdout.write(f"Launched run #{run.pk} ({run.provider} provider).")
        if not options["wait"]:
            return
        interactive = sys.stdout.isatty()
        while True:
            run.refresh_from_db()
            line = progress_line(run)
            if interactive:
                self.stdout.write("\r" + line, ending="")
                self.stdout.flush()
            if run.status not in GenerationRun.ACTIVE_STATUSES:
                break
            if not interactive:
                self.stdout.write(line)
            time.sleep(options["poll"])
        self.stdout.write(("\n" if interactive else "") + line)
        self.stdout.write(f"Run #{run.pk}: {run.get_status_display()}.")
        if run.status in (GenerationRun.Status.FAILED,):
            raise CommandError(run.error or "The run failed.")


def endpoint_line(use: services.EndpointUse) -> str:
    """ "Endpoint default (demo): Teacher -> gpt-4o-mini, Student -> ...; limits: ..." """
    endpoint = use.endpoint
    where = use.connection.base_url or "offline demo provider"
    callers = ", ".join(f"{name} -> {model}" for name, model in use.callers)
    return f"Endpoint {endpoint.name} ({where}): {callers}; limits: {endpoint.limits_text()}."


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS
