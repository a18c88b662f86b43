"""The dialogue screen: the page, generation progress, and the verdict actions."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from review import services
from review.forms import ReasonForm, VersionForm
from review.permissions import reviewer_required
from review.services import InvalidInput, ReviewError

from ._render import action_result, form_error, render_dialogue

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


def _verdict(request: HttpRequest, pk: int, form_class: type, call, success: str):
    form = form_class(request.POST)
    error: ReviewError | None = None
    if not form.is_valid():
        error = InvalidInput(form_error(form))
    else:
        try:
            call(dialogue_id=pk, actor=request.user, **form.cleaned_data)
        except ReviewError as exc:
            error = exc
    panel = {"mode": request.POST.get("mode", ""), "reason": request.POST.get("reason", "")}
    return action_result(
        request, pk, error, partials=VERDICT_PARTIALS, success=success, panel=panel
    )


def _expected(call):
    """Adapts a verdict service to the form's field names (version → expected_version)."""

    def adapted(*, version: int, **kwargs):
        return call(expected_version=version, **kwargs)

    return adapted


@require_POST
@reviewer_required
def approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _verdict(request, pk, VersionForm, _expected(services.dialogue_approve), "Approved.")


@require_http_methods(["GET", "POST"])
@reviewer_required
def reject(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method == "GET":
        return render_dialogue(request, pk, partials=("panel",), panel={"mode": "reject"})
    return _verdict(request, pk, ReasonForm, _expected(services.dialogue_reject), "Rejected.")


@require_POST
@reviewer_required
def reopen(request: HttpRequest, pk: int) -> HttpResponse:
    return _verdict(request, pk, ReasonForm, _expected(services.dialogue_reopen), "Reopened.")


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
