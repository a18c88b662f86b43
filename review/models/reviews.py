"""Review state: claims and verdicts, review policies, independent reviews, flags and
corrections (revisions)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from generation.models import Dialogue, GenerationRun, Scenario, Turn

REVIEWER_GROUP = "Reviewer"


class DialogueReview(models.Model):
    """A dialogue's review state: who holds it now and the verdict.

    Created on first touch (see `review.services.review_for`), so dialogues generated before
    anybody looked at them need no row. `version` increases on every verdict change and is the
    optimistic-concurrency token for approve/reject/reopen.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Awaiting review"
        ADJUDICATION = "adjudication", "Awaiting adjudication"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    dialogue = models.OneToOneField(
        Dialogue, on_delete=models.CASCADE, primary_key=True, related_name="review"
    )
    # From the review policy when the row is created (the first claim), so a policy changed
    # later never changes a review under way. Above 1, experts review blind (IndependentReview).
    reviews_required = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="claimed_reviews",
    )
    claim_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="decided_reviews",
    )
    decided_at = models.DateTimeField(null=True, blank=True, db_index=True)
    reason = models.TextField(blank=True)
    version = models.PositiveIntegerField(default=1)
    # Judge suggestions nobody accepted or dismissed when the verdict was given: allowed, and
    # kept so the dashboards can tell a skimmed dialogue from a checked one.
    undecided_suggestions = models.PositiveIntegerField(default=0)
    # Staff hand work out from the queue: an assigned dialogue is offered by Review next only
    # to that reviewer (or that group's members), and to them before anything unassigned.
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_reviews",
    )
    assigned_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"Review of dialogue {self.dialogue_id}: {self.status}"

    @property
    def is_independent(self) -> bool:
        return self.reviews_required > 1

    @property
    def assignee_label(self) -> str:
        if self.assigned_to_id:
            return self.assigned_to.get_username()
        return self.assigned_group.name if self.assigned_group_id else ""

    def claim_is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return bool(self.claimed_by_id and self.claim_expires_at and self.claim_expires_at > now)


class ReviewEvent(models.Model):
    """Audit trail of a dialogue's review: claims, verdicts, reopenings, regenerations."""

    class Kind(models.TextChoices):
        CLAIM = "claim", "Claimed"
        RELEASE = "release", "Released"
        APPROVE = "approve", "Approved"
        REJECT = "reject", "Rejected"
        REOPEN = "reopen", "Reopened"
        REGENERATE = "regenerate", "Regenerated"
        ASSIGN = "assign", "Assigned"
        SUBMIT = "submit", "Submitted an independent review"
        ADJUDICATE = "adjudicate", "Adjudicated"

    dialogue = models.ForeignKey(Dialogue, on_delete=models.CASCADE, related_name="review_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on dialogue {self.dialogue_id}"


class ReviewPolicy(models.Model):
    """Which reviewer groups may review a scenario's dialogues, or one run's (a run's policy
    replaces its scenario's). No policy, or a policy without groups, leaves the dialogues open
    to every reviewer; staff may always review.

    It lives in review, not on Scenario, because generation knows nothing about reviewers.
    """

    scenario = models.OneToOneField(
        Scenario, null=True, blank=True, on_delete=models.CASCADE, related_name="review_policy"
    )
    run = models.OneToOneField(
        GenerationRun,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="review_policy",
    )
    groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="+",
        help_text="Only members of these groups (and staff) may review. Empty: every reviewer.",
    )
    reviews_required = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(5)],
        help_text="Independent reviews per dialogue (1-5). Above 1, experts review blind and "
        "disagreements go to adjudication.",
    )

    class Meta:
        verbose_name_plural = "review policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(scenario__isnull=False, run__isnull=True)
                | Q(scenario__isnull=True, run__isnull=False),
                name="review_policy_scenario_xor_run",
                violation_error_message="A review policy belongs to a scenario or to a run.",
            ),
            models.CheckConstraint(
                condition=Q(reviews_required__gte=1, reviews_required__lte=5),
                name="review_policy_reviews_required_1_to_5",
                violation_error_message="Between 1 and 5 independent reviews per dialogue.",
            ),
        ]

    def __str__(self) -> str:
        target = f"run #{self.run_id}" if self.run_id else f"scenario #{self.scenario_id}"
        return f"Review policy of {target}"


class IndependentReview(models.Model):
    """One expert's blind review of a dialogue that needs several (`reviews_required` > 1).

    Their flags and proposed corrections point here and change no turn; nobody else sees them
    until every required review is submitted. Slots are taken under the dialogue's row lock
    (services/independent.py), so a dialogue never gets more than its required number.
    """

    class Verdict(models.TextChoices):
        APPROVED = "approved", "Approve"
        REJECTED = "rejected", "Reject"

    dialogue = models.ForeignKey(
        Dialogue, on_delete=models.CASCADE, related_name="independent_reviews"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="independent_reviews"
    )
    verdict = models.CharField(max_length=20, choices=Verdict.choices, blank=True)
    reason = models.TextField(blank=True)
    claim_expires_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["submitted_at", "created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["dialogue", "reviewer"], name="independent_review_once_per_reviewer"
            )
        ]

    def __str__(self) -> str:
        return f"Independent review of dialogue {self.dialogue_id} by {self.reviewer_id}"

    def is_live(self, now=None) -> bool:
        """Submitted, or still within its claim: it holds one of the dialogue's slots."""
        return self.submitted_at is not None or self.claim_expires_at > (now or timezone.now())


class Flag(models.Model):
    """A reviewer's mark on one turn. Approval needs every flag resolved."""

    class Category(models.TextChoices):
        FACTUAL = "factual", "Factual error"
        REASONING = "reasoning", "Reasoning error"
        OFF_TOPIC = "off_topic", "Off-topic"
        ROLE_BREAK = "role_break", "Role break"
        UNSAFE = "unsafe", "Unsafe"
        TONE = "tone", "Tone"
        OTHER = "other", "Other"

    class Resolution(models.TextChoices):
        OPEN = "open", "Open"
        CORRECTED = "corrected", "Corrected"
        DISMISSED = "dismissed", "Dismissed"

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="flags")
    category = models.CharField(max_length=20, choices=Category.choices)
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    resolution = models.CharField(
        max_length=20, choices=Resolution.choices, default=Resolution.OPEN, db_index=True
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    dismiss_reason = models.TextField(blank=True)
    # Set on a flag raised in an independent review: only its author sees it until all are in.
    review = models.ForeignKey(
        IndependentReview, null=True, blank=True, on_delete=models.CASCADE, related_name="flags"
    )

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.get_category_display()} flag on turn {self.turn_id} ({self.resolution})"


class TurnRevision(models.Model):
    """One change to a turn's text: who, when, before and after. Never edited or deleted."""

    class Kind(models.TextChoices):
        EDIT = "edit", "Edit"
        REVERT = "revert", "Revert to original"

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="revisions")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.EDIT)
    before = models.TextField()
    after = models.TextField()
    version = models.PositiveIntegerField(help_text="The turn's version after this change.")
    created_at = models.DateTimeField(default=timezone.now)
    # Set on a correction proposed in an independent review: the turn keeps its text until
    # the reviews agree or an adjudicator picks one (see services/independent.py).
    review = models.ForeignKey(
        IndependentReview,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="proposals",
    )

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of turn {self.turn_id} (v{self.version})"
