"""Reads for "My reviews": what a reviewer holds now, what is assigned to them, what they
decided."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q
from django.utils import timezone

from review.models import DialogueReview
from review.permissions import user_groups

RECENT = 50


@dataclass
class MyReviews:
    held: list[DialogueReview]
    assigned: list[DialogueReview]
    decided: list[DialogueReview]


def my_reviews(user: AbstractBaseUser) -> MyReviews:
    """Three short lists, one query each, newest first."""
    pending = DialogueReview.objects.filter(status=DialogueReview.Status.PENDING)
    related = ("dialogue__scenario", "claimed_by", "decided_by", "assigned_to", "assigned_group")
    now = timezone.now()
    held = pending.filter(claimed_by=user, claim_expires_at__gt=now).select_related(*related)
    mine = Q(assigned_to=user) | Q(assigned_group__in=list(user_groups(user)))
    assigned = pending.filter(mine).exclude(claimed_by=user, claim_expires_at__gt=now)
    decided = DialogueReview.objects.filter(decided_by=user).select_related(*related)
    return MyReviews(
        held=list(held.order_by("-claim_expires_at")[:RECENT]),
        assigned=list(assigned.select_related(*related).order_by("dialogue_id")[:RECENT]),
        decided=list(decided.order_by("-decided_at")[:RECENT]),
    )
