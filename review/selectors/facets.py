"""Counts per filter on the queue: for every option of every filter, how many dialogues it
would give under the other filters in force (faceted search: an option's count ignores its
own filter's current choice, so the alternatives stay visible).

One query, whatever the number of dialogues. Each option's condition is the very Q the filter
applies (QUEUE_FILTERS, the assignee and status filters); an option and its complement
(`Without`) share one set. Every dialogue gets one bit per set, and the dialogues are counted
per (run, scenario, assignee, bits): a single integer key keeps the grouping a hash of a few
hundred groups at most in practice, which are folded here into the counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Case, Count, Q, Value, When
from django.utils import timezone

from review.selectors.queue import (
    QUEUE_FILTERS,
    QueueFilters,
    Without,
    assignee_q,
    reviewable_dialogues,
    status_q,
)

# The facets shown, in the filter form's order; "status" only narrows the others (the tabs
# count the statuses).
SHOWN = ("run", "scenario", "assignee", *QUEUE_FILTERS)
ASSIGNEE_SETS = ("me", "none")
GROUP_KEYS = ("run_id", "scenario_id", "review__assigned_to_id", "review__assigned_group_id")


@dataclass(frozen=True)
class FacetOption:
    value: str
    label: str
    count: int
    active: bool
    query: str  # the queue's query string with this option chosen (the chosen one: cleared)


@dataclass(frozen=True)
class Facet:
    name: str  # the query parameter
    label: str
    options: list[FacetOption]
    active: bool  # the filter has a choice in force


def _sets(filters: QueueFilters, user: AbstractBaseUser) -> dict[object, Callable[[], Q]]:
    """Key -> condition, one per set the options test (an option and its complement: one)."""
    sets: dict[object, Callable[[], Q]] = {}
    for spec in QUEUE_FILTERS.values():
        for _, make in spec.options.values():
            base = make.make if isinstance(make, Without) else make
            sets.setdefault(base, base)
    sets |= {
        f"assignee:{value}": lambda value=value: assignee_q(value, user) for value in ASSIGNEE_SETS
    }
    if filters.status != "all":
        now = timezone.now()
        sets["status"] = lambda: status_q(filters.status, now=now)
    return sets


def _option_values(name: str, row: dict, bit: dict[object, int]) -> list[str]:
    """The options of filter `name` a group of dialogues matches."""

    def member(key: object) -> bool:
        return bool(row["bits"] & bit[key])

    if name in ("run", "scenario"):
        return [str(row[f"{name}_id"])]
    if name == "status":  # only the status chosen is a set
        return ["chosen"] if "status" in bit and member("status") else []
    if name == "assignee":
        values = [value for value in ASSIGNEE_SETS if member(f"assignee:{value}")]
        # A reviewer or group assigned is one of the grouping keys (assignee_q: the same columns).
        if row["review__assigned_to_id"]:
            values.append(f"u:{row['review__assigned_to_id']}")
        if row["review__assigned_group_id"]:
            values.append(f"g:{row['review__assigned_group_id']}")
        return values
    values = []
    for value, (_, make) in QUEUE_FILTERS[name].options.items():
        inside = member(make.make if isinstance(make, Without) else make)
        if inside != isinstance(make, Without):
            values.append(value)
    return values


def _in_force(filters: QueueFilters) -> dict[str, str]:
    """Filter name -> the option chosen, for every filter with a choice."""
    chosen = {"run": filters.run_id, "scenario": filters.scenario_id}
    chosen |= {"assignee": filters.assignee, "status": "chosen" if filters.status != "all" else ""}
    chosen |= dict(filters.choices)
    return {name: str(value) for name, value in chosen.items() if value}


def facet_counts(filters: QueueFilters, *, user: AbstractBaseUser) -> dict[str, Counter]:
    """Filter name -> Counter(option -> dialogues), each under the other filters in force."""
    sets = _sets(filters, user)
    bit = {key: 1 << i for i, key in enumerate(sets)}
    bits = sum(
        (Case(When(make(), then=Value(bit[key])), default=Value(0)) for key, make in sets.items()),
        start=Value(0),
    )
    unfaceted = QueueFilters(search=filters.search, variable=filters.variable)
    groups = (
        reviewable_dialogues(unfaceted, user=user)
        .values(*GROUP_KEYS, bits=bits)
        .annotate(n=Count("pk"))
        .order_by()
    )
    in_force = _in_force(filters)
    counts = {name: Counter() for name in SHOWN}
    for row in groups:
        matched = {name: _option_values(name, row, bit) for name in (*SHOWN, "status")}
        missed = [name for name, value in in_force.items() if value not in matched[name]]
        # Matching every filter in force, a group counts for every facet; missing one, only
        # for that filter's options (what choosing another option of it would give).
        if len(missed) > 1:
            continue
        for name in missed or SHOWN:
            if name in counts:
                counts[name].update(dict.fromkeys(matched[name], row["n"]))
    return counts


def queue_facets(
    filters: QueueFilters,
    *,
    user: AbstractBaseUser,
    choices: dict[str, tuple[str, list[tuple[str, str]]]],
) -> list[Facet]:
    """The facets to show: `choices` gives each filter's label and options (value, label) as
    the filter form offers them; an option is listed when it gives dialogues or is chosen."""
    counts = facet_counts(filters, user=user)
    in_force = _in_force(filters)
    facets = []
    for name in SHOWN:
        label, options = choices[name]
        listed = []
        for value, option_label in options:
            active = in_force.get(name) == value
            if value and (counts[name][value] or active):
                query = filters.query(**{name: "" if active else value})
                listed.append(FacetOption(value, option_label, counts[name][value], active, query))
        facets.append(Facet(name, label, listed, name in in_force))
    return facets
