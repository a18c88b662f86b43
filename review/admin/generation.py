"""The run and dialogue admins as review extends them: the export actions, each dialogue's
review status, and "View on site" opening the review screen.

generation registers its own ModelAdmins and knows nothing about review; review comes after
generation in INSTALLED_APPS, so by the time this module is imported they are registered and
are replaced here by subclasses.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse

from generation import admin as generation_admin
from generation.models import Dialogue, GenerationRun
from review.admin.exports import export_dialogues_action, export_runs_action
from review.models import DialogueReview

AWAITING = DialogueReview.Status.PENDING


class ReviewStatusFilter(admin.SimpleListFilter):
    """A complete dialogue nobody has opened yet has no review row: it awaits review."""

    title = "review status"
    parameter_name = "review"

    def lookups(self, request, model_admin):
        return DialogueReview.Status.choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == AWAITING:
            unopened = Q(review__isnull=True, status=Dialogue.Status.COMPLETE)
            return queryset.filter(unopened | Q(review__status=AWAITING))
        if value in DialogueReview.Status.values:
            return queryset.filter(review__status=value)
        return queryset


class DialogueAdmin(generation_admin.DialogueAdmin):
    list_display = [*generation_admin.DialogueAdmin.list_display, "review_status"]
    list_filter = [*generation_admin.DialogueAdmin.list_filter, ReviewStatusFilter]
    list_select_related = [*generation_admin.DialogueAdmin.list_select_related, "review"]
    actions = [export_dialogues_action]

    @admin.display(description="Review", ordering="review__status")
    def review_status(self, obj: Dialogue) -> str:
        review = getattr(obj, "review", None)  # no row until someone opens the dialogue
        if review is not None:
            return review.get_status_display()
        return AWAITING.label if obj.status == Dialogue.Status.COMPLETE else "-"

    def view_on_site(self, obj: Dialogue) -> str:
        return reverse("review:dialogue", args=[obj.pk])


class GenerationRunAdmin(generation_admin.GenerationRunAdmin):
    actions = [export_runs_action, *generation_admin.GenerationRunAdmin.actions]


for model, model_admin in ((Dialogue, DialogueAdmin), (GenerationRun, GenerationRunAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
