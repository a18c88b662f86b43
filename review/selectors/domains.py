"""Review domains: which dialogues a reviewer's groups may review (see ReviewPolicy).

A run's policy replaces its scenario's; a policy without groups, or none at all, leaves the
dialogues open to every reviewer; staff may review everything. Policies are few (one per
scenario or run at most), so they are read whole in one query and turned into id lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db.models import F, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from generation.models import Dialogue
from review.models import REVIEWER_GROUP, ReviewPolicy
from review.permissions import user_groups


@dataclass
class Policy:
    groups: set[int] = field(default_factory=set)
    reviews_required: int = 1


def _policies(*filters: Q) -> dict[tuple[str, int], Policy]:
    """{("run" | "scenario", id): its policy} in one query."""
    policies: dict[tuple[str, int], Policy] = {}
    rows = ReviewPolicy.objects.filter(*filters).values_list(
        "run_id", "scenario_id", "reviews_required", "groups"
    )
    for run_id, scenario_id, required, group_id in rows:
        key = ("run", run_id) if run_id else ("scenario", scenario_id)
        policy = policies.setdefault(key, Policy(reviews_required=required))
        if group_id:
            policy.groups.add(group_id)
    return policies


def _allows(groups: set[int], user: AbstractBaseUser) -> bool:
    return not groups or bool(groups & user_groups(user).keys())


def domain_q(user: AbstractBaseUser) -> Q:
    """The dialogues `user` may review, as a Q on Dialogue (one query; none for staff)."""
    if user.is_staff:
        return Q()
    policies = _policies()
    runs_allowed, runs_denied, scenarios_denied = [], [], []
    for (kind, pk), policy in policies.items():
        allowed = _allows(policy.groups, user)
        if kind == "run":
            (runs_allowed if allowed else runs_denied).append(pk)
        elif not allowed:
            scenarios_denied.append(pk)
    q = Q()
    if runs_denied:
        q &= ~Q(run_id__in=runs_denied)
    if scenarios_denied:
        q &= ~Q(scenario_id__in=scenarios_denied) | Q(run_id__in=runs_allowed)
    return q


def policy_of(dialogue: Dialogue) -> Policy:
    """The review policy that applies to `dialogue` (the run's, else the scenario's, else the
    default: every reviewer, one review), in one query."""
    policies = _policies(Q(run_id=dialogue.run_id) | Q(scenario_id=dialogue.scenario_id))
    scenario_policy = policies.get(("scenario", dialogue.scenario_id), Policy())
    return policies.get(("run", dialogue.run_id), scenario_policy)


def domain_groups(dialogue: Dialogue) -> set[int]:
    """The group ids allowed to review `dialogue` (empty: every reviewer), in one query."""
    return policy_of(dialogue).groups


def required_reviews_expression() -> Coalesce:
    """Each dialogue's required number of reviews, as an SQL expression on Dialogue: the
    review row's figure once its review started, else its run's policy's, else its
    scenario's, else 1."""

    def policy(**target: OuterRef) -> Subquery:
        return Subquery(ReviewPolicy.objects.filter(**target).values("reviews_required")[:1])

    return Coalesce(
        F("review__reviews_required"),
        policy(run_id=OuterRef("run_id")),
        policy(scenario_id=OuterRef("scenario_id")),
        Value(1),
        output_field=IntegerField(),
    )


def assignees() -> tuple[list, list]:
    """(active reviewers and staff, groups) for assigning work: two queries."""
    users = (
        get_user_model()
        .objects.filter(Q(groups__name=REVIEWER_GROUP) | Q(is_staff=True), is_active=True)
        .distinct()
        .order_by("username")
    )
    return list(users), list(Group.objects.order_by("name"))
