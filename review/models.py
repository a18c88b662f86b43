"""Review state: claims, verdicts, flags, corrections (revisions), the judge's suggestions and
dataset exports."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from generation.models import Dialogue, Endpoint, GenerationRun, Scenario, Turn, default_endpoint_id

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


class DialogueSignature(models.Model):
    """A complete dialogue's MinHash signature and, when it has one, its earlier twin.

    Written when the dialogue completes (and again after a regeneration) by
    `review.duplicates`. `completed_us` orders the checks: a dialogue is a near-duplicate when
    a dialogue completed before it is at least `SYNTHREVIEW_NEAR_DUPLICATE_THRESHOLD` similar;
    the earlier one stays exportable. The per-dialogue text figures feed the run's diversity
    panel, so the page never reads turn texts.
    """

    dialogue = models.OneToOneField(
        Dialogue, on_delete=models.CASCADE, primary_key=True, related_name="signature"
    )
    minhash = models.BinaryField(help_text="The MinHash values, unsigned 32-bit little-endian.")
    # When the dialogue completed (microseconds since the epoch), then its id: the check order.
    completed_us = models.BigIntegerField()
    twin = models.ForeignKey(
        Dialogue, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    similarity = models.FloatField(null=True, blank=True, help_text="Estimated Jaccard to twin.")
    assistant_words = models.PositiveIntegerField(default=0)
    assistant_bigrams = models.PositiveIntegerField(default=0)
    # Hash of the normalised opening turn: equal hashes are repeated openings.
    opening_hash = models.BigIntegerField(null=True, blank=True)
    # The distinct assistant n-grams (signed 64-bit hashes) this dialogue added to its run's
    # vocabulary (`RunNgram`), so a regeneration can take them back out.
    ngram_hashes = models.BinaryField(default=b"")

    def __str__(self) -> str:
        return f"Signature of dialogue {self.dialogue_id}"

    @property
    def is_near_duplicate(self) -> bool:
        return self.twin_id is not None


class SignatureBand(models.Model):
    """One LSH band of a signature: dialogues sharing a band key are candidate twins.

    Rows in the database, not an in-memory index, so every worker and the web process see one
    index and it grows with the database, not with one machine's memory.
    """

    dialogue = models.ForeignKey(Dialogue, on_delete=models.CASCADE, related_name="+")
    key = models.BigIntegerField(help_text="Hash of the band's number and its MinHash values.")

    class Meta:
        indexes = [models.Index(fields=["key"], name="signature_band_key")]

    def __str__(self) -> str:
        return f"Band {self.key} of dialogue {self.dialogue_id}"


class RunNgram(models.Model):
    """How many of a run's dialogues use one assistant n-gram: the run's vocabulary, kept
    up to date at each completion so distinct-1/distinct-2 are one COUNT."""

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="+")
    n = models.PositiveSmallIntegerField()
    key = models.BigIntegerField()
    dialogues = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "n", "key"], name="run_ngram_unique")]

    def __str__(self) -> str:
        return f"{self.n}-gram {self.key} of run {self.run_id}"
