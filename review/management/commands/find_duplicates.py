"""`manage.py find_duplicates [--rebuild]`: index complete dialogues for near-duplicates."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from review import duplicates
from review.models import DialogueSignature


class Command(BaseCommand):
    help = (
        "Index complete dialogues that have no near-duplicate signature yet (data from before "
        "the index, or a missed check) and record their twins. --rebuild empties the index "
        "and indexes every complete dialogue again, oldest completion first (after changing "
        "SYNTHREVIEW_NEAR_DUPLICATE_THRESHOLD or upgrading rensa)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rebuild", action="store_true", help="Empty the index and index everything again."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            if options["verbosity"] > 1:
                self.stderr.write(f"{done}/{total} dialogues indexed")

        indexed = duplicates.index_existing(rebuild=options["rebuild"], progress=progress)
        seconds = time.monotonic() - started
        marked = DialogueSignature.objects.filter(twin__isnull=False).count()
        self.stdout.write(
            f"Indexed {indexed} dialogues in {seconds:.1f} s "
            f"(threshold {duplicates.threshold()}); {marked} near-duplicates in the project."
        )
