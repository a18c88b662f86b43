"""Reads for the queue: filters, search, orderings, keyset pages and counts.

One more filter or ordering is one entry in QUEUE_FILTERS or QUEUE_ORDERINGS: the filter form,
the page, the counts (per status here, per filter in facets.py) and Review next all read
these tables.

Pages are keyset pages (`WHERE (key) > (last key seen) ORDER BY key LIMIT n`, cursors in
keyset.py), never OFFSET, so page 1,000 costs what page 1 costs. Every ordering ends in a
unique column, which makes the key total; its first column is also bounded with >= so that an
index on it starts the scan at the cursor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connection
from django.db.models import Case, Count, Exists, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.http import urlencode

from generation import variables
from generation.models import Dialogue, Turn
from review.models import (
    DialogueReview,
    DialogueSignature,
    Flag,
    Suggestion,
    SuggestionDecision,
)
from review.permissions import user_groups
from review.selectors.dialogue import review_of
from review.selectors.domains import domain_q, required_reviews_expression
from review.selectors.keyset import QueueOrdering, decode_cursor, encode_cursor, keyset_q

QUEUE_STATUSES = {
    "awaiting": "Awaiting review",
    "in_review": "In review",
    "adjudication": "Awaiting adjudication",
    "approved": "Approved",
    "rejected": "Rejected",
    "all": "All",
}
PAGE_SIZE = 50
SEARCH_CONFIG = "english"  # the text search configuration; the turn index uses the same


# Every condition on reviews, turns or flags is `pk IN (uncorrelated subquery)`: PostgreSQL
# hashes the subquery once, estimates it well (a condition on a LEFT JOINed review row is
# estimated as matching almost nothing, which turned the page into a sort of every row), and
# can still walk the ordering's index and stop after one page.


def _reviews(*conditions: Q, **filters: object) -> Q:
    """Dialogues whose review row matches."""
    rows = DialogueReview.objects.filter(*conditions, **filters).values("dialogue_id")
    return Q(pk__in=rows)


def status_q(status: str, *, now: datetime) -> Q:
    """The queue's status filter as a Q on Dialogue (dialogues nobody touched have no review)."""
    decided = _reviews(~Q(status=DialogueReview.Status.PENDING))
    claimed = _reviews(claimed_by__isnull=False, claim_expires_at__gt=now)
    if status == "awaiting":
        return ~decided & ~claimed
    if status == "in_review":
        return _reviews(status=DialogueReview.Status.PENDING) & claimed
    if status in ("adjudication", "approved", "rejected"):
        return _reviews(status=status)
    return Q()


def _live_turns() -> QuerySet:
    return Turn.objects.filter(dialogue=OuterRef("pk"), discarded_at__isnull=True)


def has_warnings_subquery() -> Exists:
    return Exists(_live_turns().exclude(warnings=[]))


def _with_warnings() -> Q:
    turns = Turn.objects.filter(discarded_at__isnull=True).exclude(warnings=[])
    return Q(pk__in=turns.order_by().values("dialogue_id"))


def _flagged(**filters: object) -> Q:
    flags = Flag.objects.filter(turn__discarded_at__isnull=True, **filters)
    return Q(pk__in=flags.order_by().values("turn__dialogue_id"))


def _judge_marked(category: str) -> Q:
    marks = Suggestion.objects.filter(turn__discarded_at__isnull=True, category=category)
    return Q(pk__in=marks.order_by().values("turn__dialogue_id"))


def _near_duplicates() -> Q:
    twins = DialogueSignature.objects.filter(twin__isnull=False)
    return Q(pk__in=twins.order_by().values("dialogue_id"))


@dataclass(frozen=True)
class Without:
    """An option that keeps what another option's condition leaves out (`~make()`); the counts
    per filter evaluate the pair's set once."""

    make: Callable[[], Q]

    def __call__(self) -> Q:
        return ~self.make()


@dataclass(frozen=True)
class QueueFilter:
    """A filter with fixed options: value -> (label, condition on Dialogue)."""

    label: str
    options: dict[str, tuple[str, Callable[[], Q]]]


QUEUE_FILTERS: dict[str, QueueFilter] = {
    "warnings": QueueFilter(
        "Automatic warnings",
        {
            "yes": ("With warnings", _with_warnings),
            "no": ("Without warnings", Without(_with_warnings)),
        },
    ),
    "flags": QueueFilter(
        "Flags",
        {
            "open": ("With open flags", lambda: _flagged(resolution=Flag.Resolution.OPEN)),
            "any": ("Flagged at all", _flagged),
            "none": ("Never flagged", Without(_flagged)),
        },
    ),
    "judge": QueueFilter(
        "Judge marked",
        {
            category: (label, lambda category=category: _judge_marked(category))
            for category, label in Flag.Category.choices
        },
    ),
    "duplicates": QueueFilter(
        "Near-duplicates",
        {
            "yes": ("Near-duplicates only", _near_duplicates),
            "no": ("Without near-duplicates", Without(_near_duplicates)),
        },
    ),
}


def risk_rank() -> object:
    """Riskiest first, as an ascending key: the judge's most severe mark nobody dismissed
    dominates, then automatic warnings, then a near-duplicate mark (severity × 4 + 2 + 1,
    negated). A dismissal within an independent review is one blind expert's answer, not the
    dialogue's, and leaves the mark's weight (and the other experts' queue) unchanged."""
    dismissed = SuggestionDecision.objects.filter(
        suggestion=OuterRef("pk"),
        status=SuggestionDecision.Status.DISMISSED,
        review__isnull=True,
    )
    severest = (
        Suggestion.objects.filter(turn__dialogue=OuterRef("pk"), turn__discarded_at__isnull=True)
        .exclude(Exists(dismissed))
        .order_by("-severity")
        .values("severity")[:1]
    )
    warned = Case(When(has_warnings_subquery(), then=Value(2)), default=Value(0))
    twin = DialogueSignature.objects.filter(dialogue=OuterRef("pk"), twin__isnull=False)
    duplicate = Case(When(Exists(twin), then=Value(1)), default=Value(0))
    return -(Coalesce(Subquery(severest), 0) * 4 + warned + duplicate)


QUEUE_ORDERINGS: dict[str, QueueOrdering] = {
    "queue": QueueOrdering("Queue order (as Review next)", ("run_id", "index")),
    "risk": QueueOrdering(
        "Riskiest first", ("risk", "run_id", "index"), annotations={"risk": risk_rank}
    ),
    "newest": QueueOrdering("Newest runs first", ("run_id", "index"), descending=True),
    "topic": QueueOrdering("Topic A–Z", ("topic", "id")),
}


@dataclass(frozen=True)
class QueueFilters:
    """What the queue shows. `choices` holds (QUEUE_FILTERS key, option) pairs; `assignee` is
    "" (anyone), "me", "none", "u:<user id>" or "g:<group id>"."""

    run_id: int | None = None
    scenario_id: int | None = None
    status: str = "awaiting"
    assignee: str = ""
    search: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    ordering: str = "queue"
    # A scenario variable's value the dialogues were written with: ("level", "beginner").
    variable: tuple[str, str] | None = None

    @property
    def variable_text(self) -> str:
        return f"{self.variable[0]}={self.variable[1]}" if self.variable else ""

    def params(self, **changes: str) -> list[tuple[str, str]]:
        """The filters as query parameters (Review next and bulk actions carry them);
        `changes` sets or (with "") clears some."""
        pairs = [("run", self.run_id), ("scenario", self.scenario_id), ("status", self.status)]
        pairs += [("assignee", self.assignee), ("q", self.search), *self.choices]
        pairs += [("variable", self.variable_text), ("sort", self.ordering)]
        pairs = [(name, value) for name, value in pairs if name not in changes]
        pairs += list(changes.items())
        return [(name, str(value)) for name, value in pairs if value]

    def query(self, **changes: str) -> str:
        """The filters as a query string (with `changes`, as in `params`)."""
        return urlencode(self.params(**changes))


def turn_text_matches(text: str) -> QuerySet:
    """Dialogue ids with a live turn matching `text`: full-text search on PostgreSQL (GIN
    index review_turn_text_search), a plain substring match elsewhere."""
    turns = Turn.objects.filter(discarded_at__isnull=True)
    if connection.vendor == "postgresql":
        query = SearchQuery(text, config=SEARCH_CONFIG, search_type="websearch")
        turns = turns.alias(document=SearchVector("text", config=SEARCH_CONFIG))
        turns = turns.filter(document=query)
    else:
        turns = turns.filter(text__icontains=text)
    return turns.order_by().values("dialogue_id")


def search_q(text: str) -> Q:
    """ "#123" is dialogue 123; anything else matches the topic (substring), the dialogue id
    and the text of its turns."""
    number = text.removeprefix("#")
    is_id = number.isdigit() and len(number) < 19
    if is_id and text.startswith("#"):
        return Q(pk=int(number))
    q = Q(topic__icontains=text) | Q(pk__in=turn_text_matches(text))
    return q | Q(pk=int(number)) if is_id else q


def assignee_q(assignee: str, user: AbstractBaseUser) -> Q:
    if assignee == "me":
        return _reviews(Q(assigned_to=user) | Q(assigned_group__in=list(user_groups(user))))
    if assignee == "none":
        return ~_reviews(Q(assigned_to__isnull=False) | Q(assigned_group__isnull=False))
    kind, _, pk = assignee.partition(":")
    if kind == "u" and pk.isdigit():
        return _reviews(assigned_to_id=int(pk))
    if kind == "g" and pk.isdigit():
        return _reviews(assigned_group_id=int(pk))
    return Q()


def reviewable_dialogues(filters: QueueFilters, *, user: AbstractBaseUser | None) -> QuerySet:
    """Complete dialogues matching the filters and the user's review domains, without the
    status filter (the counts per status use this)."""
    qs = Dialogue.objects.filter(status=Dialogue.Status.COMPLETE)
    if user is not None:
        qs = qs.filter(domain_q(user))
        if filters.assignee:
            qs = qs.filter(assignee_q(filters.assignee, user))
    if filters.run_id:
        qs = qs.filter(run_id=filters.run_id)
    if filters.scenario_id:
        qs = qs.filter(scenario_id=filters.scenario_id)
    for name, value in filters.choices:
        qs = qs.filter(QUEUE_FILTERS[name].options[value][1]())
    if filters.search:
        qs = qs.filter(search_q(filters.search))
    if filters.variable is not None:
        name, value = filters.variable
        if not variables.NAME_RE.fullmatch(name) or "__" in name:
            return qs.none()  # no variable has that name (and it must not read as a lookup)
        qs = qs.filter(**{f"variables__{name}": value})
    return qs


def queue_ordered(qs: QuerySet, ordering: str, *, backwards: bool = False) -> QuerySet:
    """`qs` in one of QUEUE_ORDERINGS (the queue's order by default), with its computed keys;
    `backwards` reverses it (a previous page). The queue page and Review next sort alike."""
    spec = QUEUE_ORDERINGS.get(ordering, QUEUE_ORDERINGS["queue"])
    if spec.annotations:
        qs = qs.annotate(**{name: make() for name, make in spec.annotations.items()})
    sign = "-" if spec.descending != backwards else ""
    return qs.order_by(*(f"{sign}{name}" for name in spec.fields))


@dataclass
class QueuePage:
    rows: list[Dialogue]
    counts: dict[str, int]
    total: int
    next_cursor: str = ""
    previous_cursor: str = ""
    first: bool = True


def queue_page(
    filters: QueueFilters,
    *,
    user: AbstractBaseUser,
    after: str = "",
    before: str = "",
    size: int = PAGE_SIZE,
) -> QueuePage:
    """One page of the queue with the counts per status: 2 queries (plus the domain's)."""
    now = timezone.now()
    base = reviewable_dialogues(filters, user=user)
    counts = base.aggregate(
        **{key: Count("pk", filter=status_q(key, now=now)) for key in QUEUE_STATUSES}
    )
    ordering = QUEUE_ORDERINGS.get(filters.ordering, QUEUE_ORDERINGS["queue"])
    backwards = bool(before) and not after
    cursor = decode_cursor(before if backwards else after, ordering)
    descending = ordering.descending != backwards
    rows_qs = queue_ordered(
        _with_row_figures(base.filter(status_q(filters.status, now=now))),
        filters.ordering,
        backwards=backwards,
    )
    if cursor is not None:
        rows_qs = rows_qs.filter(keyset_q(ordering.fields, cursor, descending=descending))
    rows = list(rows_qs[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
    page = QueuePage(rows=rows, counts=counts, total=counts.get(filters.status, 0))
    page.first = cursor is None or (backwards and not more)
    if rows:
        keys = [[getattr(row, name) for name in ordering.fields] for row in (rows[0], rows[-1])]
        page.next_cursor = encode_cursor(keys[1]) if (more or backwards) else ""
        page.previous_cursor = "" if page.first else encode_cursor(keys[0])
    for dialogue in rows:
        dialogue.review_state = review_of(dialogue)
    return page


def _with_row_figures(qs: QuerySet) -> QuerySet:
    """What each row shows: turns, open flags and warnings as subqueries (no N+1)."""
    live_turns = _live_turns().order_by().values("dialogue").annotate(n=Count("pk")).values("n")
    open_flags = (
        Flag.objects.filter(
            turn__dialogue=OuterRef("pk"),
            turn__discarded_at__isnull=True,
            resolution=Flag.Resolution.OPEN,
        )
        .order_by()
        .values("turn__dialogue")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return qs.select_related(
        "scenario",
        "run",
        "review__claimed_by",
        "review__decided_by",
        "review__assigned_to",
        "review__assigned_group",
    ).annotate(
        has_warnings=has_warnings_subquery(),
        required_reviews=required_reviews_expression(),
        turn_count=Coalesce(Subquery(live_turns), 0),
        open_flag_count=Coalesce(Subquery(open_flags), 0),
    )
