"""Run pages: the list, one run's live progress (htmx-polled partial) and Cancel."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from . import selectors, services
from .models import GenerationRun


@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.run_list(), 50).get_page(request.GET.get("page"))
    return render(request, "generation/run_list.html", {"page": page})


def _run_or_404(pk: int) -> GenerationRun:
    try:
        return selectors.run_get(pk=pk)
    except GenerationRun.DoesNotExist:
        raise Http404("No such run") from None


@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run_or_404(pk)
    dialogues = Paginator(selectors.run_dialogues(run=run), 100).get_page(request.GET.get("page"))
    context = {
        "run": run,
        "progress": selectors.run_progress(run=run),
        "failures": selectors.run_failure_reasons(run=run),
        "dialogues": dialogues,
    }
    template = "generation/run_detail.html"
    if request.htmx:
        # The admin's change page polls just the progress block; the run page polls it all.
        template += "#progress" if request.GET.get("fragment") == "progress" else "#live"
    return render(request, template, context)


@require_POST
@staff_member_required
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run_or_404(pk)
    if run.status not in GenerationRun.ACTIVE_STATUSES:
        messages.info(request, f"{run} had already ended ({run.get_status_display()}).")
    else:
        cancelled = services.run_cancel(run=run)
        messages.success(request, f"Cancelled: {cancelled} unfinished dialogue(s) stopped.")
    return redirect(run)
