"""Run pages: the list, one run's live progress (htmx-polled partial) and Cancel.

Runs show topics, costs, who launched them and the LLM server's error texts, so only staff
and holders of the `generation.view_generationrun` permission see them (review grants it to
its Reviewer group).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from . import selectors, services
from .models import GenerationRun

VIEW_RUNS = "generation.view_generationrun"


def run_viewer_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """403 for a logged-in user who is neither staff nor allowed to view runs."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        user = request.user
        if not (user.is_active and (user.is_staff or user.has_perm(VIEW_RUNS))):
            raise PermissionDenied("Run pages are for staff and reviewers.")
        return view(request, *args, **kwargs)

    return wrapped


@require_GET
@run_viewer_required
def run_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.run_list(), 50).get_page(request.GET.get("page"))
    return render(request, "generation/run_list.html", {"page": page})


def _run_or_404(pk: int) -> GenerationRun:
    try:
        return selectors.run_get(pk=pk)
    except GenerationRun.DoesNotExist:
        raise Http404("No such run") from None


@require_GET
@run_viewer_required
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run_or_404(pk)
    dialogues = Paginator(selectors.run_dialogues(run=run), 100).get_page(request.GET.get("page"))
    context = {
        "run": run,
        "progress": selectors.run_progress(run=run),
        "failures": selectors.run_failure_reasons(run=run),
        "endpoints": selectors.run_endpoint_pacing(run=run),
        "dialogues": dialogues,
    }
    template = "generation/run_detail.html"
    if request.htmx:
        # The admin's change page polls just the progress block; the run page polls it all.
        template += "#progress" if request.GET.get("fragment") == "progress" else "#live"
    return render(request, template, context)


@require_http_methods(["GET", "POST"])
@staff_member_required
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation (a page of its own, so it works without JavaScript); POST
    cancels."""
    run = _run_or_404(pk)
    if run.status not in GenerationRun.ACTIVE_STATUSES:
        messages.info(request, f"{run} had already ended ({run.get_status_display()}).")
        return redirect(run)
    if request.method == "GET":
        context = {"run": run, "progress": selectors.run_progress(run=run)}
        return render(request, "generation/run_cancel.html", context)
    cancelled = services.run_cancel(run=run)
    messages.success(request, f"Cancelled: {cancelled} unfinished dialogue(s) stopped.")
    return redirect(run)
