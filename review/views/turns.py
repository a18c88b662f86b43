"""Per-turn actions: edit (correct), flag, dismiss a flag, revert, regenerate from here,
accept or dismiss a judge suggestion.

Each answers an htmx request with the turn's article (swapped in place) and the review panel
out-of-band (open-flag count, version token); a plain form post is redirected back to the turn.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from review import services
from review.forms import DismissForm, FlagForm, NoFieldsForm, TurnEditForm, VersionForm
from review.permissions import reviewer_required
from review.services import NothingChanged, TurnConflict

from ._render import action_result, call_service, render_dialogue, with_version

TURN_PARTIALS = ("turn", "panel")


def _turn_post(
    request: HttpRequest,
    pk: int,
    turn_pk: int,
    form_class: type,
    call: Callable[..., object],
    *,
    success: str,
    mode: str = "",
    partials: tuple[str, ...] = TURN_PARTIALS,
) -> HttpResponse:
    """Validate, call the service, and show the turn again: with the error and the reviewer's
    input kept (`mode` reopens the edit or flag form) when the service refused."""
    form = form_class(request.POST)
    error = call_service(form, call, dialogue_id=pk, turn_id=turn_pk, actor=request.user)
    ui = {"turn": turn_pk, "mode": mode if error else "", "post": request.POST}
    ui["conflict"] = isinstance(error, TurnConflict)
    ui["unchanged"] = isinstance(error, NothingChanged)
    anchor = f"#turn-{turn_pk}"
    return action_result(
        request, pk, error, partials=partials, success=success, anchor=anchor, ui=ui
    )


@require_GET
@reviewer_required
def turn(request: HttpRequest, pk: int, turn_pk: int) -> HttpResponse:
    """The turn as displayed (what Cancel swaps back in)."""
    return render_dialogue(request, pk, partials=("turn",), ui={"turn": turn_pk})


@require_http_methods(["GET", "POST"])
@reviewer_required
def turn_edit(request: HttpRequest, pk: int, turn_pk: int) -> HttpResponse:
    if request.method == "GET":
        return render_dialogue(
            request, pk, partials=("turn",), ui={"turn": turn_pk, "mode": "edit"}
        )
    return _turn_post(
        request, pk, turn_pk, TurnEditForm, with_version(services.turn_correct),
        success="Correction saved.", mode="edit",
    )  # fmt: skip


@require_http_methods(["GET", "POST"])
@reviewer_required
def turn_flag(request: HttpRequest, pk: int, turn_pk: int) -> HttpResponse:
    if request.method == "GET":
        return render_dialogue(
            request, pk, partials=("turn",), ui={"turn": turn_pk, "mode": "flag"}
        )
    return _turn_post(
        request, pk, turn_pk, FlagForm, services.turn_flag, success="Flagged.", mode="flag"
    )


@require_POST
@reviewer_required
def turn_revert(request: HttpRequest, pk: int, turn_pk: int) -> HttpResponse:
    return _turn_post(
        request, pk, turn_pk, VersionForm, with_version(services.turn_revert),
        success="Reverted to the model's original text.",
    )  # fmt: skip


@require_POST
@reviewer_required
def flag_dismiss(request: HttpRequest, pk: int, turn_pk: int, flag_pk: int) -> HttpResponse:
    def dismiss(**kwargs: object) -> object:
        return services.flag_dismiss(flag_id=flag_pk, **kwargs)

    return _turn_post(request, pk, turn_pk, DismissForm, dismiss, success="Flag dismissed.")


@require_POST
@reviewer_required
def turn_regenerate(request: HttpRequest, pk: int, turn_pk: int) -> HttpResponse:
    """Regenerating replaces every later turn, so the whole transcript is the target."""
    return _turn_post(
        request, pk, turn_pk, VersionForm, _regenerate,
        success="Regenerating from this turn.", partials=("transcript", "generation", "panel"),
    )  # fmt: skip


def _regenerate(*, dialogue_id: int, turn_id: int, actor: object, version: int) -> int:
    return services.dialogue_regenerate(
        dialogue_id=dialogue_id, turn_id=turn_id, actor=actor, expected_version=version
    )


@require_POST
@reviewer_required
def suggestion_accept(
    request: HttpRequest, pk: int, turn_pk: int, suggestion_pk: int
) -> HttpResponse:
    def accept(**kwargs: object) -> object:
        return services.suggestion_accept(suggestion_id=suggestion_pk, **kwargs)

    return _turn_post(
        request, pk, turn_pk, NoFieldsForm, accept, success="Suggestion accepted as a flag."
    )


@require_POST
@reviewer_required
def suggestion_dismiss(
    request: HttpRequest, pk: int, turn_pk: int, suggestion_pk: int
) -> HttpResponse:
    def dismiss(**kwargs: object) -> object:
        return services.suggestion_dismiss(suggestion_id=suggestion_pk, **kwargs)

    return _turn_post(request, pk, turn_pk, NoFieldsForm, dismiss, success="Suggestion dismissed.")
