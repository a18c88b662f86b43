"""Rendering shared by the dialogue and turn views: the full page, or only the partials an
htmx request swaps (the first partial is the target; the others go out-of-band)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_htmx.http import reswap
from django_htmx.http import retarget as retarget_response

from generation.models import Dialogue
from review.models import DialogueReview, Flag
from review.selectors import dialogue_for_review
from review.services import InvalidInput, ReviewError

TEMPLATE = "review/dialogue.html"
GENERATING = (Dialogue.Status.PENDING, Dialogue.Status.GENERATING)
DISCARDED = "That turn was replaced by a regeneration; the transcript below is the current one."


def page_context(
    request: HttpRequest, dialogue: Dialogue, *, ui: dict | None = None, panel: dict | None = None
) -> dict[str, Any]:
    review = dialogue.review_state
    now = timezone.now()
    held_by_other = review.claim_is_active(now) and review.claimed_by_id != request.user.pk
    generating = dialogue.status in GENERATING
    independent = independent_context(dialogue, request.user, now)
    if independent:
        held_by_other = independent["refused"]
    ui = ui or {}
    for turn in dialogue.live_turns:
        # The open form, error or conflict belongs to one turn; the others render plainly.
        turn.ui = ui if ui.get("turn") == turn.pk else {}
        # The turn's action URLs all extend this one (see review/urls.py): one reverse() per
        # turn instead of eight keeps a 60-turn page cheap.
        turn.url = reverse("review:turn", args=[dialogue.pk, turn.pk])
    return {
        "dialogue": dialogue,
        "review": review,
        "claim_active": review.claim_is_active(now),
        "held_by_other": held_by_other,
        "generating": generating,
        "can_edit": review.status == DialogueReview.Status.PENDING
        and not held_by_other
        and not generating,
        "is_demo": dialogue.run.provider == "demo",
        "ui": ui,
        "independent": independent,
        "flag_categories": Flag.Category.choices,
        "panel": panel or {},
        "claim_minutes": settings.SYNTHREVIEW_CLAIM_MINUTES,
        "max_chars": settings.SYNTHREVIEW_MAX_CORRECTION_CHARS,
    }


def independent_context(dialogue: Dialogue, user: object, now: datetime) -> dict[str, Any]:
    """What the panel says about independent reviews (empty for a single-review dialogue):
    the viewer's own review, how many are in, and whether the viewer may (still) take part."""
    review = dialogue.review_state
    if not review.is_independent:
        return {}
    reviews = dialogue.independent_list
    mine = next((r for r in reviews if r.reviewer_id == user.pk), None)
    live = [r for r in reviews if r.is_live(now) and r is not mine]
    submitted = [r for r in reviews if r.submitted_at]
    done = mine is not None and mine.submitted_at is not None
    full = mine is None and len(live) >= review.reviews_required
    refused = review.status == DialogueReview.Status.PENDING and (done or full)
    return {"mine": mine, "submitted": len(submitted), "required": review.reviews_required,
            "done": done, "full": full, "refused": refused, "reviews": reviews}  # fmt: skip


def render_dialogue(
    request: HttpRequest,
    pk: int,
    *,
    partials: Iterable[str] = (),
    status: int = 200,
    ui: dict | None = None,
    panel: dict | None = None,
) -> HttpResponse:
    dialogue = dialogue_for_review(pk=pk, viewer=request.user)
    context = page_context(request, dialogue, ui=ui, panel=panel)
    partials = list(partials)
    retarget = ""
    if ui and ui.get("turn"):
        context["turn"] = next((t for t in dialogue.live_turns if t.pk == ui["turn"]), None)
        if context["turn"] is None:
            if not any(t.pk == ui["turn"] for t in dialogue.discarded_turns):
                raise Http404("No such turn in this dialogue")
            # A regeneration replaced the turn (in another tab, say): show the transcript as
            # it is now, with the reason, instead of a turn that no longer exists.
            context["panel"] = {"error": ui.get("error") or DISCARDED}
            partials, retarget, status = ["transcript", "panel"], "#transcript", 409
    if not request.htmx or not partials:
        return render(request, TEMPLATE, context, status=status)
    html = "".join(
        render_to_string(f"{TEMPLATE}#{name}", {**context, "oob": index > 0}, request)
        for index, name in enumerate(partials)
    )
    response = HttpResponse(html, status=status)
    if retarget:
        response = reswap(retarget_response(response, retarget), "outerHTML")
    return response


def action_result(
    request: HttpRequest,
    pk: int,
    error: ReviewError | None,
    *,
    partials: Iterable[str],
    success: str,
    anchor: str = "",
    ui: dict | None = None,
    panel: dict | None = None,
) -> HttpResponse:
    """After a POST: htmx gets the changed partials; a plain form post is redirected back to
    the page on success (post/redirect/get) or shown the page with the error and its input."""
    if error is None and not request.htmx:
        messages.success(request, success)
        return redirect(f"{request.build_absolute_uri(dialogue_url(pk))}{anchor}")
    status = error.status if error else 200
    if error:
        if ui is not None:
            ui["error"] = error.message
        else:
            panel = {**(panel or {}), "error": error.message}
    return render_dialogue(request, pk, partials=partials, status=status, ui=ui, panel=panel)


def dialogue_url(pk: int) -> str:
    return reverse("review:dialogue", args=[pk])


def form_error(form: Any) -> str:
    """The first form error as one sentence (these forms only fail on tampered input)."""
    for field, errors in form.errors.items():
        label = field if field != "__all__" else ""
        return f"{label}: {errors[0]}" if label else str(errors[0])
    return "Invalid input."


def call_service(form: Any, call: Callable[..., object], **ids: object) -> ReviewError | None:
    """Validate the form and call the service with its data; the refusal, if any, to show."""
    if not form.is_valid():
        return InvalidInput(form_error(form))
    try:
        call(**ids, **form.cleaned_data)
    except ReviewError as exc:
        return exc
    return None


def with_version(call: Callable[..., object]) -> Callable[..., object]:
    """Adapts a service to the forms' field name: the posted `version` is `expected_version`."""

    def adapted(*, version: int, **kwargs: object) -> object:
        return call(expected_version=version, **kwargs)

    return adapted
