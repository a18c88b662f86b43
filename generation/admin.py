"""Admin: scenarios with their two personas, launching and watching runs, dialogues.

The review app extends the run and dialogue admins with its export actions and review status
(review/admin/generation.py); nothing here knows about review.
"""

from __future__ import annotations

import re

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from . import selectors, services
from .forms import LaunchRunForm, PersonaForm, PersonaFormSet, ScenarioForm
from .llm import endpoint_connection
from .models import Dialogue, Endpoint, GenerationRun, Persona, Scenario, Turn


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    """Endpoints name the environment variable of their key, never the key: nothing here can
    show one. "Test" lists the endpoint's models with this process's environment."""

    list_display = [
        "name",
        "server",
        "api_key_env",
        "key_status",
        "default_model",
        "max_concurrent",
        "requests_per_minute",
        "tokens_per_minute",
    ]
    search_fields = ["name", "base_url", "default_model"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fields = [
        "name",
        "base_url",
        "api_key_env",
        "default_model",
        "max_concurrent",
        "requests_per_minute",
        "tokens_per_minute",
    ]

    @admin.display(description="Server")
    def server(self, obj: Endpoint) -> str:
        connection = endpoint_connection(obj)
        if connection.provider == "demo":
            return "offline demo provider"
        return connection.base_url or "https://api.openai.com/v1"

    @admin.display(description="Key")
    def key_status(self, obj: Endpoint) -> str:
        connection = endpoint_connection(obj)
        if connection.missing_key:
            return f"{connection.missing_key} not set"
        return "set" if connection.api_key else "none needed"

    def has_delete_permission(self, request, obj=None) -> bool:
        # The default endpoint stands for the environment settings and is every new persona's.
        return not (obj is not None and obj.is_default) and super().has_delete_permission(
            request, obj
        )

    def get_urls(self):
        test = path(
            "<path:object_id>/test/",
            self.admin_site.admin_view(self.test_view),
            name="generation_endpoint_test",
        )
        return [test, *super().get_urls()]

    def test_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        endpoint = self.get_object(request, object_id)
        if endpoint is None or not self.has_view_permission(request, endpoint):
            return redirect("admin:generation_endpoint_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Test endpoint {endpoint.name}",
            "endpoint": endpoint,
            "connection": endpoint_connection(endpoint),
            "test": services.endpoint_test(endpoint=endpoint),
            "change_url": reverse("admin:generation_endpoint_change", args=[endpoint.pk]),
        }
        return TemplateResponse(request, "admin/generation/endpoint/test.html", context)


class PersonaInline(admin.StackedInline):
    model = Persona
    form = PersonaForm
    formset = PersonaFormSet
    extra = 0
    min_num = 2
    max_num = 2
    validate_min = True
    validate_max = True
    can_delete = False


@admin.register(Scenario)
class ScenarioAdmin(admin.ModelAdmin):
    form = ScenarioForm
    inlines = [PersonaInline]
    list_display = ["name", "slug", "min_turns", "max_turns", "topic_count", "updated_at"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}

    @admin.display(description="Topics")
    def topic_count(self, obj: Scenario) -> int:
        return len(obj.topics or [])


@admin.action(description="Cancel selected runs…")
def cancel_runs_action(modeladmin, request, queryset) -> HttpResponse | None:
    """Asks first, on a page listing the runs that would stop (like the delete action)."""
    active = list(queryset.filter(status__in=GenerationRun.ACTIVE_STATUSES))
    if not active:
        messages.info(request, "None of the selected runs is queued or running.")
        return None
    if request.POST.get("confirm") != "yes":
        context = {
            **modeladmin.admin_site.each_context(request),
            "opts": modeladmin.opts,
            "title": f"Cancel {len(active)} run{'s' if len(active) != 1 else ''}?",
            "runs": active,
            "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(
            request, "admin/generation/generationrun/cancel_selected.html", context
        )
    for run in active:
        services.run_cancel(run=run)
    messages.success(request, f"Cancelled {len(active)} run(s).")
    return None


@admin.register(GenerationRun)
class GenerationRunAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "status",
        "done_count",
        "failed_count",
        "requested_count",
        "provider",
        "cost_usd",
        "created_at",
    ]
    list_filter = ["status", "provider", "scenario"]
    list_select_related = ["scenario"]
    actions = [cancel_runs_action]
    change_form_template = "admin/generation/generationrun/change_form.html"
    readonly_fields = [
        "live_progress",
        "scenario",
        "status",
        "requested_count",
        "provider",
        "model_override",
        "endpoint_override",
        "temperature_override",
        "max_in_flight",
        "seed",
        "done_count",
        "failed_count",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    ]
    fields = readonly_fields

    class Media:
        js = ["vendor/htmx/htmx.min.js"]

    @admin.display(description="Progress")
    def live_progress(self, obj: GenerationRun) -> str:
        url = reverse("generation:run_detail", args=[obj.pk])
        # htmx swaps the run page's progress block in here (and keeps polling while active).
        return format_html(
            '<div hx-get="{}?fragment=progress" hx-trigger="load" hx-swap="outerHTML">'
            '<a href="{}">Open the run page</a></div> <p><a href="{}">Run page →</a></p>',
            url,
            url,
            url,
        )

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        """ "Add generation run" is the launch form: a run is created with its dialogues."""
        if not self.has_add_permission(request):
            return redirect("admin:generation_generationrun_changelist")
        form = LaunchRunForm(request.POST or None, initial=request.GET.dict() or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            run = services.run_launch(
                scenario=data["scenario"],
                count=data["count"],
                created_by=request.user,
                model_override=data["model_override"],
                endpoint_override=data["endpoint_override"],
                temperature_override=data["temperature_override"],
                max_in_flight=data["max_in_flight"],
                seed=data["seed"],
                variable_coverage=data["variable_coverage"],
                oversample=data["oversample"],
                background=True,
            )
            messages.success(request, f"Launched {run}.")
            warning = LaunchRunForm.unknown_price_warning(data["model_override"])
            if warning:
                messages.warning(request, warning)
            # The run page shows its progress live, as for a run launched anywhere else.
            return HttpResponseRedirect(run.get_absolute_url())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Launch a generation run",
            "form": form,
            "plans": selectors.launch_plans(),
            "media": self.media + form.media,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/generation/generationrun/launch.html", context)

    def get_urls(self):
        urls = super().get_urls()
        cancel = path(
            "<path:object_id>/cancel/",
            self.admin_site.admin_view(self.cancel_view),
            name="generation_generationrun_cancel",
        )
        return [cancel, *urls]

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Cancelling stops work that cannot be resumed, so it asks first (GET), then does it
        (POST), like the admin's delete confirmation; no script needed."""
        run = self.get_object(request, object_id)
        if run is None or not self.has_change_permission(request, run):
            return redirect("admin:generation_generationrun_changelist")
        change_url = reverse("admin:generation_generationrun_change", args=[run.pk])
        if run.status not in GenerationRun.ACTIVE_STATUSES:
            messages.info(request, f"{run} had already ended ({run.get_status_display()}).")
            return redirect(change_url)
        if request.method == "POST":
            cancelled = services.run_cancel(run=run)
            messages.success(
                request, f"Cancelled {run}: {cancelled} unfinished dialogue(s) stopped."
            )
            return redirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Cancel run #{run.pk}?",
            "run": run,
            "original": run,
            "progress": selectors.run_progress(run=run),
            "change_url": change_url,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/generation/generationrun/cancel.html", context)


class TurnInline(admin.TabularInline):
    model = Turn
    fields = [
        "position",
        "persona",
        "text",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "retries",
        "finish_reason",
        "warnings",
        "discarded_at",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["discarded_at", "position"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("persona")


def dialogue_search(queryset: QuerySet, term: str) -> QuerySet:
    """A dialogue by its id ("12" or "#12"), or by words of its topic or failure reason."""
    term = term.strip()
    if not term:
        return queryset
    match = re.fullmatch(r"#?(\d{1,18})", term)
    by_text = Q(topic__icontains=term) | Q(failure_reason__icontains=term)
    return queryset.filter(by_text | Q(pk=int(match.group(1))) if match else by_text)


@admin.register(Dialogue)
class DialogueAdmin(admin.ModelAdmin):
    list_display = ["dialogue", "run", "status", "stop_reason", "short_failure", "attempts"]
    list_filter = ["status", "scenario"]
    list_select_related = ["run", "run__scenario"]
    search_fields = ["topic"]
    search_help_text = "A dialogue id (12 or #12), or words of the topic or failure reason."
    inlines = [TurnInline]
    readonly_fields = [
        "run",
        "scenario",
        "index",
        "topic",
        "status",
        "stop_reason",
        "failure_reason",
        "attempts",
        "lease_owner",
        "lease_expires_at",
        "dispatched_at",
        "resume_from",
        "created_at",
        "finished_at",
    ]
    fields = readonly_fields

    @admin.display(description="Dialogue", ordering="pk")
    def dialogue(self, obj: Dialogue) -> str:
        return str(obj)

    @admin.display(description="Failure reason")
    def short_failure(self, obj: Dialogue) -> str:
        return obj.failure_reason[:120]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        return dialogue_search(queryset, search_term), False

    def has_add_permission(self, request) -> bool:
        return False  # dialogues come from runs
