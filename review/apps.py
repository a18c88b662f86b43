from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ReviewConfig(AppConfig):
    name = "review"
    verbose_name = "Review and export"

    def ready(self) -> None:
        from generation.signals import dialogue_completed
        from review.duplicates.receivers import dialogue_completed_check
        from review.permissions import reviewer_group_setup

        # After every migrate (and every test database flush), once permissions exist.
        post_migrate.connect(reviewer_group_setup, sender=self)
        dialogue_completed.connect(dialogue_completed_check, dispatch_uid="review.near_duplicates")
