"""Admin for review state: claims (with a bulk release), verdicts, flags, revisions, events.

Revisions and events are the audit trail, so the admin shows them read-only.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from review import services
from review.admin.exports import export_reviews_action
from review.models import (
    DialogueReview,
    Flag,
    IndependentReview,
    ReviewEvent,
    ReviewPolicy,
    TurnRevision,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ClaimFilter(admin.SimpleListFilter):
    title = "claim"
    parameter_name = "claim"

    def lookups(self, request, model_admin):
        return [("active", "Claimed now"), ("expired", "Claim expired"), ("none", "Not claimed")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(claimed_by__isnull=False, claim_expires_at__gt=now)
        if self.value() == "expired":
            return queryset.filter(claimed_by__isnull=False, claim_expires_at__lte=now)
        if self.value() == "none":
            return queryset.filter(claimed_by__isnull=True)
        return queryset


@admin.action(description="Release the selected claims (back to the queue)")
def release_claims(modeladmin, request: HttpRequest, queryset: QuerySet) -> None:
    ids = list(queryset.filter(claimed_by__isnull=False).values_list("pk", flat=True))
    released = services.reviews_release(dialogue_ids=ids, actor=request.user)
    modeladmin.message_user(request, f"Released {released} claim(s).", messages.SUCCESS)


@admin.register(DialogueReview)
class DialogueReviewAdmin(admin.ModelAdmin):
    list_display = [
        "dialogue", "status", "claimed_by", "claim_expires_at", "assigned_to", "assigned_group",
        "reviews_required", "decided_by", "decided_at",
    ]  # fmt: skip
    list_filter = ["status", ClaimFilter]
    list_select_related = ["dialogue", "claimed_by", "decided_by"]
    search_fields = ["dialogue__topic", "claimed_by__username", "decided_by__username"]
    actions = [release_claims, export_reviews_action]
    readonly_fields = [
        "dialogue", "status", "claimed_by", "claim_expires_at", "decided_by", "decided_at",
        "reason", "version", "assigned_to", "assigned_group", "reviews_required",
    ]  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created by the review screens on first touch


@admin.register(Flag)
class FlagAdmin(ReadOnlyAdmin):
    list_display = ["turn", "category", "resolution", "created_by", "created_at", "resolved_by"]
    list_filter = ["category", "resolution"]
    list_select_related = ["turn", "created_by", "resolved_by"]


@admin.register(TurnRevision)
class TurnRevisionAdmin(ReadOnlyAdmin):
    list_display = ["turn", "kind", "author", "version", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["turn", "author"]


@admin.register(ReviewEvent)
class ReviewEventAdmin(ReadOnlyAdmin):
    list_display = ["dialogue", "kind", "actor", "created_at", "note"]
    list_filter = ["kind"]
    list_select_related = ["dialogue", "actor"]


@admin.register(ReviewPolicy)
class ReviewPolicyAdmin(admin.ModelAdmin):
    """Who reviews a scenario's (or one run's) dialogues, and how many times each."""

    list_display = ["__str__", "scenario", "run", "reviews_required"]
    list_select_related = ["scenario", "run"]
    autocomplete_fields = ["scenario"]
    raw_id_fields = ["run"]
    filter_horizontal = ["groups"]


@admin.register(IndependentReview)
class IndependentReviewAdmin(ReadOnlyAdmin):
    list_display = ["dialogue", "reviewer", "verdict", "submitted_at", "claim_expires_at"]
    list_filter = ["verdict"]
    list_select_related = ["dialogue", "reviewer"]
