"""Admin: scenarios with their two personas, launching and watching runs, dialogues."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from review.admin.exports import export_dialogues_action, export_runs_action

from . import services
from .forms import LaunchRunForm, PersonaForm, PersonaFormSet, ScenarioForm
from .models import Dialogue, GenerationRun, Persona, Scenario, Turn


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


@admin.action(description="Cancel selected runs")
def cancel_runs_action(modeladmin, request, queryset) -> None:
    stopped = 0
    for run in queryset.filter(status__in=GenerationRun.ACTIVE_STATUSES):
        services.run_cancel(run=run)
        stopped += 1
    messages.success(request, f"Cancelled {stopped} run(s).")


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
    actions = [export_runs_action, cancel_runs_action]
    change_form_template = "admin/generation/generationrun/change_form.html"
    readonly_fields = [
        "live_progress",
        "scenario",
        "status",
        "requested_count",
        "provider",
        "model_override",
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
        css = {"all": ["css/admin.css"]}

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
                temperature_override=data["temperature_override"],
                max_in_flight=data["max_in_flight"],
                seed=data["seed"],
            )
            messages.success(request, f"Launched {run}.")
            warning = LaunchRunForm.unknown_price_warning(data["model_override"])
            if warning:
                messages.warning(request, warning)
            return HttpResponseRedirect(
                reverse("admin:generation_generationrun_change", args=[run.pk])
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Launch a generation run",
            "form": form,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/generation/generationrun/launch.html", context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST" and object_id and "_cancel_run" in request.POST:
            run = self.get_object(request, object_id)
            if run is None or not self.has_change_permission(request, run):
                return redirect("admin:generation_generationrun_changelist")
            cancelled = services.run_cancel(run=run)
            messages.success(
                request, f"Cancelled {run}: {cancelled} unfinished dialogue(s) stopped."
            )
            return redirect("admin:generation_generationrun_change", object_id)
        return super().changeform_view(request, object_id, form_url, extra_context)


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


@admin.register(Dialogue)
class DialogueAdmin(admin.ModelAdmin):
    list_display = ["__str__", "run", "status", "stop_reason", "short_failure", "attempts"]
    list_filter = ["status", "scenario"]
    list_select_related = ["run", "run__scenario"]
    search_fields = ["topic", "failure_reason"]
    actions = [export_dialogues_action]
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

    @admin.display(description="Failure reason")
    def short_failure(self, obj: Dialogue) -> str:
        return obj.failure_reason[:120]

    def has_add_permission(self, request) -> bool:
        return False  # dialogues come from runs
