"""The dialogue screen: the page, generation progress, and the verdict actions."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from review import services
from review.forms import ReasonForm, VersionForm
from review.permissions import reviewer_required
from review.selectors import QueueFilters
from review.services import ReviewError

from ._render import action_result, call_service, render_dialogue, with_version
from .queue import chosen_ordering, claim_next_response

# What a verdict changes on the page: the panel (target), and the turns (read-only or not).
VERDICT_PARTIALS = ("panel", "transcript")


@require_GET
@reviewer_required
def dialogue(request: HttpRequest, pk: int) -> HttpResponse:
    return render_dialogue(request, pk)


@require_GET
@reviewer_required
def progress(request: HttpRequest, pk: int) -> HttpResponse:
    """Polled while the model writes: the status line, plus the turns so far out-of-band."""
    return render_dialogue(request, pk, partials=("generation", "transcript", "panel"))


def _verdict(
    request: HttpRequest, pk: int, form_class: type, call: Callable[..., object], success: str
) -> HttpResponse:
    error = call_service(form_class(request.POST), call, dialogue_id=pk, actor=request.user)
    # The open form and its reason come back with an error, so nothing typed is lost.
    panel = {"mode": request.POST.get("mode", ""), "reason": request.POST.get("reason", "")}
    return action_result(
        request, pk, error, partials=VERDICT_PARTIALS, success=success, panel=panel
    )


@require_POST
@reviewer_required
def approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _verdict(request, pk, VersionForm, with_version(services.dialogue_approve), "Approved.")


@require_POST
@reviewer_required
def approve_next(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve, then claim and open the next dialogue: one click (or Shift+A) per dialogue."""
    error = call_service(
        VersionForm(request.POST), with_version(services.dialogue_approve),
        dialogue_id=pk, actor=request.user,
    )  # fmt: skip
    if error is not None:
        return action_result(request, pk, error, partials=VERDICT_PARTIALS, success="")
    messages.success(request, f"Approved dialogue #{pk}.")
    return claim_next_response(request, QueueFilters(ordering=chosen_ordering(request)))


@require_http_methods(["GET", "POST"])
@reviewer_required
def reject(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method == "GET":
        return render_dialogue(request, pk, partials=("panel",), panel={"mode": "reject"})
    return _verdict(request, pk, ReasonForm, with_version(services.dialogue_reject), "Rejected.")


@require_POST
@reviewer_required
def reopen(request: HttpRequest, pk: int) -> HttpResponse:
    return _verdict(request, pk, ReasonForm, with_version(services.dialogue_reopen), "Reopened.")


@require_POST
@reviewer_required
def release(request: HttpRequest, pk: int) -> HttpResponse:
    error: ReviewError | None = None
    try:
        services.review_release(dialogue_id=pk, actor=request.user)
    except ReviewError as exc:
        error = exc
    return action_result(
        request, pk, error, partials=VERDICT_PARTIALS, success="Released: back in the queue."
    )
