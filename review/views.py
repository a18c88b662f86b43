from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from generation.models import Dialogue


@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    dialogues = Dialogue.objects.select_related("scenario", "run")[:100]
    return render(request, "review/queue.html", {"dialogues": dialogues})


@require_GET
def dialogue_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dialogue = get_object_or_404(Dialogue.objects.select_related("scenario"), pk=pk)
    turns = dialogue.turns.filter(discarded_at__isnull=True).select_related("persona")
    return render(request, "review/dialogue.html", {"dialogue": dialogue, "turns": turns})
