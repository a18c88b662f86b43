"""Dataset exports: what was asked for, their progress and their files."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class DatasetExport(models.Model):
    """A recorded export: who, when, filters, format, counts, checksum and the file itself."""

    class Format(models.TextChoices):
        OPENAI = "openai", "OpenAI chat JSONL"
        SHAREGPT = "sharegpt", "ShareGPT JSONL"
        DPO = "dpo", "DPO preference pairs (TRL) JSONL"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Source(models.TextChoices):
        ADMIN = "admin", "Admin"
        CLI = "cli", "Command line"

    format = models.CharField(max_length=20, choices=Format.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    filters = models.JSONField(default=dict, blank=True)
    include_system = models.BooleanField(default=True)
    scrub_pii = models.BooleanField(default=False)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.ADMIN)
    output_path = models.CharField(
        max_length=1000, blank=True, help_text="Where the command line also wrote the file."
    )
    requested_by = models.CharField(
        max_length=150, blank=True, help_text="The operating-system user, for command-line exports."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    total_count = models.PositiveIntegerField(default=0, help_text="Dialogues to write.")
    progress_count = models.PositiveIntegerField(default=0)
    exported_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    record_count = models.PositiveIntegerField(default=0, help_text="Lines written.")
    sha256 = models.CharField(max_length=64, blank=True)
    file = models.FileField(upload_to="exports/", blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Export #{self.pk} ({self.format}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return min(100, self.progress_count * 100 // self.total_count) if self.total_count else 0

    def mark_done(self, *, file_name: str, sha256: str, manifest: dict, **counts: int) -> None:
        """Record a finished file. Only called once the file is complete under its final name,
        so a record that says done always has its file."""
        self.status = self.Status.DONE
        self.file.name = file_name
        self.sha256 = sha256
        self.manifest = manifest
        self.error = ""
        self.finished_at = timezone.now()
        for name, value in counts.items():
            setattr(self, name, value)
        self.progress_count = self.total_count
        self.save()

    def mark_failed(self, error: str) -> None:
        """Record why an export produced no file (nothing to export, disk full, ...)."""
        self.status = self.Status.FAILED
        self.error = error
        self.file.name = ""
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "error", "file", "finished_at"])
