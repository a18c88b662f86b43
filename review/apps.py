from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ReviewConfig(AppConfig):
    name = "review"
    verbose_name = "Review and export"

    def ready(self) -> None:
        from review import receivers  # noqa: F401  (connects them)
        from review.permissions import reviewer_group_setup

        # After every migrate (and every test database flush), once permissions exist.
        post_migrate.connect(reviewer_group_setup, sender=self)
