"""Dashboards: a run's, a scenario's (or all scenarios') figures, and the team page (staff).

Each view parses the scope, computes its board (review/insights/panels.py) and renders the
page, or only the board for htmx polling while a run is live. Each panel's CSV has a URL of
its own.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from generation.models import GenerationRun, Scenario
from review.insights import downloads, panels
from review.insights.scope import Scope
from review.permissions import reviewer_required

TEAM_PERIODS = (7, 30, 90)


def _render(
    request: HttpRequest, template: str, board: tuple, scope: Scope, **context: object
) -> HttpResponse:
    """The page, or only its board for the board's own htmx polling."""
    context |= {"panels": panels.board_compute(board, scope), "scope": scope}
    partial = "#board" if request.htmx and request.htmx.target == "insights-board" else ""
    return render(request, f"review/insights/{template}{partial}", context)


@require_GET
@reviewer_required
def run_insights(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(GenerationRun.objects.select_related("scenario"), pk=pk)
    live = run.status in GenerationRun.ACTIVE_STATUSES
    return _render(request, "run.html", panels.RUN_BOARD, Scope(run_id=run.pk), run=run, live=live)


@require_GET
@reviewer_required
def scenario_insights(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """One scenario's figures, or (without pk) every scenario's together."""
    scenario = get_object_or_404(Scenario, pk=pk) if pk is not None else None
    scope = Scope(scenario_id=pk, compare=_compare(request))
    runs = scope.runs().filter(status__in=GenerationRun.ACTIVE_STATUSES)
    context = {"scenario": scenario, "live": runs.exists()}
    if scenario is None:
        context["scenarios"] = Scenario.objects.order_by("name").values("pk", "name")
    return _render(request, "scenario.html", panels.SCENARIO_BOARD, scope, **context)


@require_GET
@reviewer_required
def team_insights(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("The team page is for staff.")
    context = {"periods": TEAM_PERIODS, "live": False}
    return _render(request, "team.html", panels.TEAM_BOARD, Scope(days=_days(request)), **context)


BOARDS = {
    "run": panels.RUN_BOARD,
    "scenario": panels.SCENARIO_BOARD,
    "all": panels.SCENARIO_BOARD,
    "team": panels.TEAM_BOARD,
}


@require_GET
@reviewer_required
def insights_csv(
    request: HttpRequest, board: str, slug: str, pk: int | None = None
) -> HttpResponse:
    """`board` is "run", "scenario", "all" or "team" (set in review/urls.py, not by users)."""
    if board == "team" and not request.user.is_staff:
        raise PermissionDenied("The team page is for staff.")
    panel = panels.panel_find(BOARDS[board], slug)
    if panel is None:
        raise Http404("No such panel")
    model = {"run": GenerationRun, "scenario": Scenario}.get(board)
    if model is not None:
        get_object_or_404(model, pk=pk)
    scope = _csv_scope(request, board, pk)
    response = HttpResponse(downloads.panel_csv(panel, scope), content_type="text/csv")
    name = downloads.csv_filename([board, pk, slug] if pk else [board, slug])
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _csv_scope(request: HttpRequest, board: str, pk: int | None) -> Scope:
    return Scope(
        run_id=pk if board == "run" else None,
        scenario_id=pk if board == "scenario" else None,
        compare=_compare(request),
        days=_days(request),
    )


def _compare(request: HttpRequest) -> tuple[str, str] | None:
    """The two models the scenario page compares (?a=&b=), or None for its default."""
    compare = (request.GET.get("a", ""), request.GET.get("b", ""))
    return compare if any(compare) else None


def _days(request: HttpRequest) -> int:
    days = request.GET.get("days", "")
    return int(days) if days in {str(period) for period in TEAM_PERIODS} else 30
