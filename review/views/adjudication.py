"""Independent reviews, for staff: adjudicating a disagreement, and agreement per run."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from review import selectors, services
from review.permissions import reviewer_required
from review.services import ReviewError

from ._render import dialogue_url


def _staff_only(request: HttpRequest) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("Adjudication and agreement figures are for admins.")


@require_http_methods(["GET", "POST"])
@reviewer_required
def adjudicate(request: HttpRequest, pk: int) -> HttpResponse:
    """The reviews side by side; the POST picks or merges each disputed turn and decides."""
    _staff_only(request)
    case = selectors.adjudication_for(pk=pk)
    error = ""
    if request.method == "POST":
        try:
            services.dialogue_adjudicate(
                dialogue_id=pk, actor=request.user, texts=_chosen_texts(request, case),
                verdict=request.POST.get("verdict", ""), reason=request.POST.get("reason", ""),
            )  # fmt: skip
        except ReviewError as exc:
            error = exc.message
        else:
            messages.success(request, "Adjudicated.")
            return redirect(dialogue_url(pk))
    status = 422 if error else 200
    context = {"case": case, "error": error, "post": request.POST}
    return render(request, "review/adjudicate.html", context, status=status)


def _chosen_texts(request: HttpRequest, case: selectors.Adjudication) -> dict[int, str]:
    """{turn id: text} from each proposed turn's choice: keep, one review's text, or merged."""
    texts = {}
    for turn in case.turns:
        if not turn.proposed:
            continue
        choice = request.POST.get(f"choice-{turn.pk}", "keep")
        proposals = {f"r{c['review'].pk}": c["proposal"] for c in turn.columns if c["proposal"]}
        if choice in proposals:
            texts[turn.pk] = proposals[choice].after
        elif choice == "merge":
            texts[turn.pk] = request.POST.get(f"merged-{turn.pk}", "")
    return texts


@require_GET
@reviewer_required
def run_agreement(request: HttpRequest, pk: int) -> HttpResponse:
    _staff_only(request)
    return render(request, "review/agreement.html", {"figures": selectors.run_agreement(pk=pk)})
