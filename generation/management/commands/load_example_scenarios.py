"""`manage.py load_example_scenarios`: add or update the shipped example scenarios."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from generation import services


class Command(BaseCommand):
    help = "Add or update the example scenarios shipped with synthreview (idempotent)."

    def handle(self, *args, **options) -> None:
        scenarios = services.scenario_upsert_examples()
        self.stdout.write(f"Example scenarios: {', '.join(s.slug for s in scenarios)}.")
