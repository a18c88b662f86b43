"""Scenarios, generation runs, dialogues and their turns."""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


class Side(models.TextChoices):
    """The role a persona's turns take in exported training data."""

    ASSISTANT = "assistant", "assistant"
    USER = "user", "user"


def persona_sides_problem(sides: Collection[str]) -> str:
    """Why two personas' sides cannot make training data, or "" when they can.

    An export writes one persona's turns as user messages and the other's as assistant
    messages; two personas on one side would merge into a single message with no reply.
    """
    if sorted(sides) == sorted(Side.values):
        return ""
    if len(sides) == 2 and len(set(sides)) == 1:
        found = f"both are {next(iter(sides))}"
    else:
        found = "found: " + (", ".join(sorted(sides)) or "none")
    return (
        f"One persona must be on the user side and the other on the assistant side ({found}): "
        "training data needs a user message and an assistant reply."
    )


DEFAULT_ENDPOINT_NAME = "default"

env_var_name = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]*$",
    "An environment variable name: letters, digits and underscores, not starting with a digit.",
)


class Endpoint(models.Model):
    """An OpenAI-compatible server personas (and judges) call, and the limits it is paced to.

    The API key is never stored: `api_key_env` names the environment variable that holds it,
    read by the web process at launch (to refuse a missing one) and by the workers per call.
    The endpoint named "default" stands for today's environment settings: an empty base URL
    means `OPENAI_BASE_URL`, and an endpoint with neither a base URL nor a key is served by the
    offline demo provider.
    """

    name = models.SlugField(max_length=100, unique=True)
    base_url = models.URLField(
        blank=True,
        help_text="e.g. https://api.openai.com/v1 or http://gpu-host:8000/v1. "
        "Empty: OPENAI_BASE_URL (and with no key either: the offline demo provider).",
    )
    api_key_env = models.CharField(
        "API key variable",
        max_length=100,
        blank=True,
        validators=[env_var_name],
        help_text="Name of the environment variable holding the key (the key itself is never "
        "stored or shown). Empty: the server needs no key.",
    )
    default_model = models.CharField(
        max_length=200, blank=True, help_text="Empty: SYNTHREVIEW_LLM_MODEL."
    )
    max_concurrent = models.PositiveIntegerField(
        "max concurrent requests",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Across every run and worker. Empty: only each run's own cap.",
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100_000_000)],
        help_text="Empty: learned from the server's x-ratelimit-* headers, if it sends them.",
    )
    tokens_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(2_000_000_000)],
        help_text="Prompt and completion tokens. Empty: learned from the headers, if any.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_ENDPOINT_NAME

    def limits_text(self) -> str:
        """The configured limits, for launch pages and the admin."""
        parts = [
            f"{self.max_concurrent} concurrent" if self.max_concurrent else "",
            f"{self.requests_per_minute:,} requests/min" if self.requests_per_minute else "",
            f"{self.tokens_per_minute:,} tokens/min" if self.tokens_per_minute else "",
        ]
        return ", ".join(p for p in parts if p) or "no limits set (headers followed if sent)"


def default_endpoint_id() -> int:
    """The default endpoint's id, created on first use (a fresh database has it from its
    migration; a test database flushed between tests gets it back here). Read by id alone, so
    the migration that adds the persona's endpoint can call it whatever columns come later."""
    found = Endpoint.objects.filter(name=DEFAULT_ENDPOINT_NAME).values_list("pk", flat=True)
    for pk in found[:1]:
        return pk
    endpoint, _ = Endpoint.objects.get_or_create(
        name=DEFAULT_ENDPOINT_NAME, defaults={"api_key_env": "OPENAI_API_KEY"}
    )
    return endpoint.pk


class Scenario(models.Model):
    """Two personas, what they talk about, and when a dialogue stops."""

    class TopicOrder(models.TextChoices):
        SEQUENTIAL = "sequential", "One dialogue per topic, in order (cycled)"
        SAMPLED = "sampled", "Sampled with the run's seed"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    opening_instruction = models.TextField(
        help_text="Sent to the opening persona as the first user message. "
        "Placeholders: {topic}, {scenario}, {persona}, {partner} and the scenario's variables.",
    )
    topics = models.JSONField(default=list, help_text="A list of topics (strings).")
    # [{"name": "level", "values": ["beginner", ...], "weights": [3, ...]}, ...]: each
    # dialogue samples one value of each with its run's seed (generation.variables).
    variables = models.JSONField(default=list, blank=True)
    topic_order = models.CharField(
        max_length=20, choices=TopicOrder.choices, default=TopicOrder.SEQUENTIAL
    )
    min_turns = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(200)]
    )
    max_turns = models.PositiveSmallIntegerField(
        default=8, validators=[MinValueValidator(1), MaxValueValidator(200)]
    )
    end_marker = models.CharField(
        max_length=50,
        default="<END>",
        blank=True,
        help_text="A persona ends the dialogue by writing this (it is stripped from the turn).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(min_turns__lte=models.F("max_turns")), name="scenario_min_le_max_turns"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def persona_sides_problem(self) -> str:
        """Why this scenario's personas cannot make training data, or "" when they can."""
        return persona_sides_problem([persona.side for persona in self.personas.all()])


class Persona(models.Model):
    """One of a scenario's two speakers. Position 0 or 1; `opens` marks who speaks first."""

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="personas")
    position = models.PositiveSmallIntegerField(validators=[MaxValueValidator(1)])
    name = models.CharField(max_length=100)
    side = models.CharField(max_length=10, choices=Side.choices)
    system_prompt = models.TextField()
    endpoint = models.ForeignKey(
        Endpoint,
        on_delete=models.PROTECT,
        related_name="personas",
        default=default_endpoint_id,
        help_text="The server this persona's turns come from.",
    )
    model = models.CharField(
        max_length=200,
        blank=True,
        help_text="Empty: the endpoint's default model, else SYNTHREVIEW_LLM_MODEL.",
    )
    temperature = models.FloatField(
        default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    max_tokens = models.PositiveIntegerField(
        default=512, validators=[MinValueValidator(1), MaxValueValidator(32_768)]
    )
    opens = models.BooleanField(default=False, help_text="This persona speaks first.")

    class Meta:
        ordering = ["scenario", "position"]
        constraints = [
            models.UniqueConstraint(fields=["scenario", "position"], name="persona_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.side})"


class GenerationRun(models.Model):
    """A request for N dialogues of one scenario, and its live counters."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"
        FINISHED_WITH_FAILURES = "finished_with_failures", "Finished with failures"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    class VariableCoverage(models.TextChoices):
        SAMPLED = "sampled", "Sampled by weight"
        BALANCED = "balanced", "Balanced: every combination equally often"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    scenario = models.ForeignKey(Scenario, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(
        max_length=30, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    requested_count = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(100_000)]
    )
    provider = models.CharField(max_length=20, help_text="demo or openai, fixed at launch.")
    model_override = models.CharField(max_length=200, blank=True)
    endpoint_override = models.ForeignKey(
        Endpoint,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Both personas call this endpoint instead of their own.",
    )
    temperature_override = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    max_in_flight = models.PositiveIntegerField(
        default=64, validators=[MinValueValidator(1), MaxValueValidator(10_000)]
    )
    seed = models.BigIntegerField(default=0)
    variable_coverage = models.CharField(
        max_length=20, choices=VariableCoverage.choices, default=VariableCoverage.SAMPLED
    )
    # {"variable": {"value": factor}}: these values' weights are multiplied by the factor.
    oversample = models.JSONField(default=dict, blank=True)
    done_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Run #{self.pk} · {self.scenario} · {self.requested_count} dialogues"

    def get_absolute_url(self) -> str:
        return reverse("generation:run_detail", args=[self.pk])


class Dialogue(models.Model):
    """One generated conversation. Generation state and the worker lease live here."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        GENERATING = "generating", "Generating"
        COMPLETE = "complete", "Complete"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="dialogues")
    scenario = models.ForeignKey(Scenario, on_delete=models.PROTECT, related_name="dialogues")
    index = models.PositiveIntegerField(help_text="Position within the run.")
    topic = models.CharField(max_length=500)
    # The scenario variables' values sampled for this dialogue at launch ({"level": "beginner"}).
    variables = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    stop_reason = models.CharField(max_length=200, blank=True)
    failure_reason = models.TextField(blank=True)
    # A worker holds the lease while generating; an expired lease means the worker died.
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    # Set when the dialogue's task is enqueued (to the time it is due, when its start is
    # delayed: engine.admission); a run keeps at most its window dispatched
    # (engine.dispatch.run_window: max_in_flight, plus headroom when requests are gated).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # Usage of turns saved since the last roll-up into the run's totals. Each turn adds here
    # (a row only this dialogue's worker writes); the run's shared row is updated once per
    # dialogue, so hundreds of threads do not queue on one row lock.
    pending_prompt_tokens = models.PositiveIntegerField(default=0)
    pending_completion_tokens = models.PositiveIntegerField(default=0)
    pending_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    # Set once this dialogue's outcome is counted in the run's done/failed counters; checked
    # and set under the row lock so an outcome is counted exactly once (see services).
    counted_in_run = models.BooleanField(default=False)
    # Regenerating from turn k sets this to k + 1 and generation continues from there.
    resume_from = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="dialogue_unique_run_index")
        ]

    def __str__(self) -> str:
        return f"Dialogue #{self.pk} · {self.topic}"


class Turn(models.Model):
    """One message. `original_text` is what the model wrote and never changes; `text` is current.

    Turns discarded by a regeneration keep their rows (with `discarded_at`) so the history shows
    what the model said before; only live turns must have unique positions.
    """

    class Warning(models.TextChoices):
        EMPTY = "empty", "Empty output"
        TRUNCATED = "truncated", "Truncated (hit max tokens)"
        ROLE_FLIP = "role_flip", "Role flip (spoke as the other persona)"
        REPETITION = "repetition", "Repeats an earlier turn"
        LOOP = "loop", "Closing loop (thanks/goodbye exchange)"

    dialogue = models.ForeignKey(Dialogue, on_delete=models.CASCADE, related_name="turns")
    position = models.PositiveIntegerField()
    persona = models.ForeignKey(Persona, on_delete=models.PROTECT, related_name="+")
    side = models.CharField(max_length=10, choices=Side.choices)
    original_text = models.TextField()
    text = models.TextField()
    version = models.PositiveIntegerField(default=1)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=50, blank=True)
    retries = models.PositiveSmallIntegerField(
        default=0, help_text="Transient LLM errors retried before this turn came back."
    )
    warnings = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    discarded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dialogue", "position", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["dialogue", "position"],
                condition=Q(discarded_at__isnull=True),
                name="turn_unique_live_position",
            )
        ]
        indexes = [models.Index(fields=["dialogue", "position"], name="turn_dialogue_position")]

    def __str__(self) -> str:
        return f"Turn {self.position} of dialogue {self.dialogue_id}"

    @property
    def is_corrected(self) -> bool:
        return self.text != self.original_text
