"""The queue: what awaits review, filters and counts, and Review next."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseLocation

from review import selectors, services
from review.forms import QueueFilterForm
from review.permissions import reviewer_required

from ._render import dialogue_url

# The order last chosen on the queue page, which "Review next" on a dialogue page follows.
QUEUE_ORDER_KEY = "review_queue_order"


@require_GET
@reviewer_required
def queue(request: HttpRequest) -> HttpResponse:
    form = QueueFilterForm(request.GET)
    filters = form.filters()
    if request.session.get(QUEUE_ORDER_KEY, "run") != filters.order:
        request.session[QUEUE_ORDER_KEY] = filters.order  # "Review next" on a dialogue follows it
    rows, counts, total = selectors.queue_page(filters)
    context = {"form": form, "filters": filters, "rows": rows, "counts": counts, "total": total}
    context["statuses"] = selectors.QUEUE_STATUSES
    partial = "#results" if request.htmx and request.htmx.target == "queue-results" else ""
    return render(request, f"review/queue.html{partial}", context)


@require_POST
@reviewer_required
def review_next(request: HttpRequest) -> HttpResponse:
    """Claim the next dialogue (within the queue's current filters) and open it."""
    data = request.POST.copy()
    data.setdefault("order", request.session.get(QUEUE_ORDER_KEY, "run"))
    filters = QueueFilterForm(data).filters()
    dialogue = services.review_claim_next(actor=request.user, filters=filters)
    if dialogue is None:
        messages.info(request, "Nothing is waiting for review right now. Well done!")
        url = reverse("review:queue")
    else:
        url = dialogue_url(dialogue.pk)
    if request.htmx:
        # Swap the main area (no reload) and push the dialogue's URL into the history.
        return HttpResponseLocation(url, target="#main", select="#main", swap="outerHTML")
    return redirect(url)
