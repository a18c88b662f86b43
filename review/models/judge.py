"""A scenario's judge, its passes over dialogues and the marks it leaves as suggestions."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from generation.models import Dialogue, Endpoint, Scenario, Turn, default_endpoint_id

from .reviews import Flag, IndependentReview


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
    """One judge mark on a turn. Experts answer it with a SuggestionDecision each: accept (it
    becomes their flag) or dismiss."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="suggestions")
    category = models.CharField(max_length=20, choices=Flag.Category.choices)
    severity = models.PositiveSmallIntegerField()
    rationale = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-severity", "created_at", "pk"]

    def __str__(self) -> str:
        return f"Judge: {self.get_category_display()} on turn {self.turn_id}"


class SuggestionDecision(models.Model):
    """An expert's answer to a judge suggestion, within one review.

    A decision belongs where the expert's flags do: to their IndependentReview when the
    dialogue needs several (`review`), so each expert answers the judge blind and sees only
    their own answers until all reviews are in; to the dialogue's one review otherwise
    (`review` empty). Either way a suggestion is answered at most once per review.
    """

    class Status(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        DISMISSED = "dismissed", "Dismissed"

    suggestion = models.ForeignKey(Suggestion, on_delete=models.CASCADE, related_name="decisions")
    review = models.ForeignKey(
        IndependentReview,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="suggestion_decisions",
    )
    status = models.CharField(max_length=20, choices=Status.choices)
    # The flag an acceptance raised (the expert's own, in their review).
    flag = models.OneToOneField(
        Flag, null=True, blank=True, on_delete=models.SET_NULL, related_name="suggestion_decision"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["decided_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["suggestion", "review"],
                name="suggestion_decided_once_per_review",
                violation_error_message="This suggestion is already decided in this review.",
            ),
            models.UniqueConstraint(
                fields=["suggestion"],
                condition=models.Q(review__isnull=True),
                name="suggestion_decided_once",
                violation_error_message="This suggestion is already decided.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_status_display()} suggestion {self.suggestion_id}"
