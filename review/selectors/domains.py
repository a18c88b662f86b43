"""Review domains: which dialogues a reviewer's groups may review (see ReviewPolicy).

A run's policy replaces its scenario's; a policy without groups, or none at all, leaves the
dialogues open to every reviewer; staff may review everything. Policies are few (one per
scenario or run at most), so they are read whole in one query and turned into id lists.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db.models import Q

from generation.models import Dialogue
from review.models import REVIEWER_GROUP, ReviewPolicy
from review.permissions import user_groups


def _policies(*filters: Q) -> dict[tuple[str, int], set[int]]:
    """{("run" | "scenario", id): the policy's group ids} in one query."""
    policies: dict[tuple[str, int], set[int]] = {}
    rows = ReviewPolicy.objects.filter(*filters).values_list("run_id", "scenario_id", "groups")
    for run_id, scenario_id, group_id in rows:
        key = ("run", run_id) if run_id else ("scenario", scenario_id)
        groups = policies.setdefault(key, set())
        if group_id:
            groups.add(group_id)
    return policies


def _allows(groups: set[int], user: AbstractBaseUser) -> bool:
    return not groups or bool(groups & user_groups(user).keys())


def domain_q(user: AbstractBaseUser) -> Q:
    """The dialogues `user` may review, as a Q on Dialogue (one query; none for staff)."""
    if user.is_staff:
        return Q()
    policies = _policies()
    runs_allowed = [pk for (kind, pk), g in policies.items() if kind == "run" and _allows(g, user)]
    runs_denied = [pk for (kind, pk), g in policies.items() if kind == "run" and not _allows(g, user)]
    scenarios_denied = [
        pk for (kind, pk), g in policies.items() if kind == "scenario" and not _allows(g, user)
    ]
    q = Q()
    if runs_denied:
        q &= ~Q(run_id__in=runs_denied)
    if scenarios_denied:
        q &= ~Q(scenario_id__in=scenarios_denied) | Q(run_id__in=runs_allowed)
    return q


def domain_groups(dialogue: Dialogue) -> set[int]:
    """The group ids allowed to review `dialogue` (empty: every reviewer), in one query."""
    policies = _policies(Q(run_id=dialogue.run_id) | Q(scenario_id=dialogue.scenario_id))
    return policies.get(("run", dialogue.run_id), policies.get(("scenario", dialogue.scenario_id), set()))


def may_review(user: AbstractBaseUser, dialogue: Dialogue) -> bool:
    """Whether `user` may claim `dialogue` (one query; none for staff)."""
    return user.is_staff or _allows(domain_groups(dialogue), user)


def assignees() -> tuple[list, list]:
    """(active reviewers and staff, groups) for assigning work: two queries."""
    users = (
        get_user_model()
        .objects.filter(Q(groups__name=REVIEWER_GROUP) | Q(is_staff=True), is_active=True)
        .distinct()
        .order_by("username")
    )
    return list(users), list(Group.objects.order_by("name"))
