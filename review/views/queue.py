"""The queue: what awaits review, search, filters, counts and keyset pages; Review next;
staff bulk actions; and "My reviews"."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseLocation

from review import selectors, services
from review.forms import BulkForm, QueueFilterForm, assignee_choices
from review.permissions import reviewer_required
from review.services import ReviewError

from ._render import dialogue_url, form_error

# The order last chosen on the queue page, which "Review next" on a dialogue page follows.
QUEUE_ORDER_KEY = "review_queue_order"


@require_GET
@reviewer_required
def queue(request: HttpRequest) -> HttpResponse:
    users, groups = selectors.assignees()
    choices = assignee_choices(users, groups)
    form = QueueFilterForm(request.GET, assignees=choices)
    filters = form.filters()
    if request.session.get(QUEUE_ORDER_KEY, "queue") != filters.ordering:
        request.session[QUEUE_ORDER_KEY] = filters.ordering  # Review next on a dialogue follows it
    page = selectors.queue_page(
        filters, user=request.user, after=request.GET.get("after", ""),
        before=request.GET.get("before", ""),
    )  # fmt: skip
    context = {"form": form, "filters": filters, "page": page, "rows": page.rows}
    context |= {"counts": page.counts, "total": page.total}
    context |= {"statuses": selectors.QUEUE_STATUSES, "bulk": BulkForm(assignees=choices)}
    partial = "#results" if request.htmx and request.htmx.target == "queue-results" else ""
    return render(request, f"review/queue.html{partial}", context)


@require_GET
@reviewer_required
def queue_facets(request: HttpRequest) -> HttpResponse:
    """Counts per filter: loaded into the queue page after it (htmx), or a page of its own."""
    form = QueueFilterForm(request.GET, assignees=assignee_choices(*selectors.assignees()))
    filters = form.filters()
    facets = selectors.queue_facets(filters, user=request.user, choices=form.facet_choices())
    partial = "#facets" if request.htmx else ""
    context = {"facets": facets, "filters": filters}
    return render(request, f"review/queue_facets.html{partial}", context)


def claim_next_response(request: HttpRequest, filters: selectors.QueueFilters) -> HttpResponse:
    """Claim the next dialogue for the user and open it (or the queue when none is left)."""
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


@require_POST
@reviewer_required
def review_next(request: HttpRequest) -> HttpResponse:
    """Claim the next dialogue (within the queue's current filters) and open it."""
    data = request.POST.copy()
    data.setdefault("sort", chosen_ordering(request))
    return claim_next_response(request, QueueFilterForm(data).filters())


def chosen_ordering(request: HttpRequest) -> str:
    """The order last chosen on the queue page."""
    return request.session.get(QUEUE_ORDER_KEY, "queue")


@require_POST
@reviewer_required
def bulk(request: HttpRequest) -> HttpResponse:
    """Staff: assign, release or reject the ticked dialogues, then back to the same queue."""
    if not request.user.is_staff:
        raise PermissionDenied("Bulk actions are for admins.")
    form = BulkForm(request.POST, assignees=assignee_choices(*selectors.assignees()))
    if not form.is_valid():
        messages.error(request, form_error(form))
    else:
        try:
            messages.success(request, _bulk_apply(request, form.cleaned_data))
        except ReviewError as exc:
            messages.error(request, exc.message)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("review:queue")
    return redirect(back)


def _bulk_apply(request: HttpRequest, data: dict) -> str:
    ids, actor, action = data["ids"], request.user, data["action"]
    if action == "release":
        return f"Released {services.reviews_release(dialogue_ids=ids, actor=actor)} claim(s)."
    if action == "reject":
        count = services.reviews_reject(dialogue_ids=ids, actor=actor, reason=data["reason"])
        return f"Rejected {count} of {len(ids)} dialogue(s)."
    kind, _, pk = data["assignee"].partition(":")
    user = get_user_model().objects.get(pk=pk) if kind == "u" else None
    group = Group.objects.get(pk=pk) if kind == "g" else None
    count = services.reviews_assign(dialogue_ids=ids, actor=actor, assignee=user, group=group)
    who = user.get_username() if user else (group.name if group else "nobody")
    return f"Assigned {count} of {len(ids)} dialogue(s) to {who}."


@require_GET
@reviewer_required
def my_reviews(request: HttpRequest) -> HttpResponse:
    return render(request, "review/mine.html", {"mine": selectors.my_reviews(request.user)})
