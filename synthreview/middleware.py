"""Project-wide request and response rules that no single view should have to remember."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils.cache import patch_cache_control

Handler = Callable[[HttpRequest], HttpResponse]


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path_info:
        return True
    params = [request.GET]
    if request.method == "POST":
        params.append(request.POST)
    return any(
        "\x00" in key or any("\x00" in value for value in values)
        for query in params
        for key, values in query.lists()
    )


class RejectMalformedInputMiddleware:
    """Answer 400 to input no screen can use, instead of failing deep inside a view with 500.

    A NUL character cannot be stored in PostgreSQL text, so a query string or form field
    holding one (a tampered admin filter, say) is refused before any query runs. An admin
    action posted with selected ids that are not ids of that model is refused the same way.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _has_nul(request):
            return HttpResponseBadRequest(
                "Bad request: the address or form holds a NUL character.",
                content_type="text/plain; charset=utf-8",
            )
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable, args: tuple, kwargs: dict
    ) -> HttpResponse | None:
        # The admin marks its per-model views with the ModelAdmin that serves them.
        model_admin = getattr(view, "model_admin", None)
        if model_admin is None or request.method != "POST":
            return None
        pk = model_admin.model._meta.pk
        field = pk.target_field if pk.is_relation else pk  # a one-to-one primary key
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                field.run_validators(field.to_python(value))  # the type, and the column's range
            except ValidationError:
                return HttpResponseBadRequest(
                    f"Bad request: {value[:40]!r} is not the id of a "
                    f"{model_admin.model._meta.verbose_name}.",
                    content_type="text/plain; charset=utf-8",
                )
        return None


class PrivatePagesMiddleware:
    """Pages are per user and change with every action: never serve one from a cache.

    Without this the browser's Back button shows a review screen as it was before the
    reviewer approved it. Static files are answered earlier by WhiteNoise and keep their
    long-lived caching; a view that sets its own Cache-Control keeps it.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_store=True)
        return response
