"""A scenario's judge, its passes over dialogues and the marks it leaves as suggestions."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from generation.models import Dialogue, Endpoint, Scenario, Turn, default_endpoint_id

from .reviews import Flag


class JudgeConfig(models.Model):
    """A scenario's judge: a model that reads each completed dialogue and marks wrong turns.

    The judge may only use `categories` (a subset of the experts' flag categories) and rates
    each mark from 1 (minor) to `severity_max` (serious).
    """

    scenario = models.OneToOneField(
        Scenario, on_delete=models.CASCADE, primary_key=True, related_name="judge_config"
    )
    enabled = models.BooleanField(default=True)
    endpoint = models.ForeignKey(
        Endpoint,
        on_delete=models.PROTECT,
        related_name="judges",
        default=default_endpoint_id,
        help_text="The server the judge's calls go to (paced to its limits, like a persona's).",
    )
    model = models.CharField(
        max_length=200,
        blank=True,
        help_text="Empty: the endpoint's default model, else SYNTHREVIEW_LLM_MODEL.",
    )
    rubric = models.TextField(
        help_text="What the judge looks for, in plain words; the transcript and the answer "
        "format are added to it."
    )
    categories = models.JSONField(
        default=list, blank=True, help_text="Flag categories the judge may use (empty: all)."
    )
    severity_max = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(10)],
        help_text="Severities run from 1 (minor) to this value (serious).",
    )

    def __str__(self) -> str:
        return f"Judge of {self.scenario_id}"

    def clean(self) -> None:
        unknown = sorted(set(self.categories or ()) - set(Flag.Category.values))
        if unknown:
            raise ValidationError(
                {"categories": f"Unknown flag categories: {', '.join(map(str, unknown))}."}
            )

    def allowed_categories(self) -> list[str]:
        return [c for c in Flag.Category.values if not self.categories or c in self.categories]


class Judgement(models.Model):
    """The judge's latest pass over a dialogue: its state, what it cost, what it dropped.

    `transcript` identifies the live turns the pass read (ids and versions); a regeneration
    changes it, so a pass over an older transcript never overwrites a newer one's marks.
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Judging"
        DONE = "done", "Judged"
        FAILED = "failed", "Judge failed"

    dialogue = models.OneToOneField(
        Dialogue, on_delete=models.CASCADE, primary_key=True, related_name="judgement"
    )
    status = models.CharField(max_length=20, choices=Status.choices, db_index=True)
    transcript = models.CharField(max_length=64)
    model = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    mark_count = models.PositiveIntegerField(default=0)
    dropped_turns = models.PositiveIntegerField(
        default=0, help_text="Marks naming a turn the dialogue does not have."
    )
    dropped_categories = models.PositiveIntegerField(
        default=0, help_text="Marks with a category the judge may not use."
    )
    dropped_malformed = models.PositiveIntegerField(
        default=0, help_text="Marks missing a field or with a field of the wrong type."
    )
    calls = models.PositiveSmallIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Judgement of dialogue {self.dialogue_id}: {self.status}"

    @property
    def dropped(self) -> int:
        return self.dropped_turns + self.dropped_categories + self.dropped_malformed


class Suggestion(models.Model):
    """One judge mark on a turn, until an expert accepts it (it becomes a Flag) or dismisses it."""

    class Status(models.TextChoices):
        UNDECIDED = "undecided", "Undecided"
        ACCEPTED = "accepted", "Accepted"
        DISMISSED = "dismissed", "Dismissed"

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="suggestions")
    category = models.CharField(max_length=20, choices=Flag.Category.choices)
    severity = models.PositiveSmallIntegerField()
    rationale = models.TextField(blank=True)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.UNDECIDED, db_index=True
    )
    flag = models.OneToOneField(
        Flag, null=True, blank=True, on_delete=models.SET_NULL, related_name="suggestion"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-severity", "created_at", "pk"]

    def __str__(self) -> str:
        return f"Judge: {self.get_category_display()} on turn {self.turn_id} ({self.status})"
