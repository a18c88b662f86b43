"""Dataset export admin: the "Export selected as training set" actions and export records.

`export_dialogues_action`, `export_runs_action` and `export_reviews_action` are attached to the
Dialogue, GenerationRun and DialogueReview admins (review/admin/generation.py, reviews.py).
Each shows an intermediate page (format, system prompt, PII scrubbing, and how many of the
selection are approved), then starts the export: inline when small, in a Celery task when large
(see `review.export.dataset_export_start`).

"Select all N" over a whole changelist, or over one scenario's, is recorded as that filter;
any narrower selection is recorded as the ids it holds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import capfirst

from generation.models import Scenario
from review import export
from review.models import DatasetExport


class ExportForm(forms.Form):
    format = forms.ChoiceField(
        choices=DatasetExport.Format.choices,
        initial=DatasetExport.Format.OPENAI,
        widget=forms.RadioSelect,
    )
    include_system = forms.BooleanField(
        required=False,
        initial=True,
        label="Include system prompt",
        help_text="Start each example with the assistant persona's system prompt.",
    )
    scrub_pii = forms.BooleanField(
        required=False,
        label="Scrub personal data",
        help_text="Replace emails, phone and card numbers, IBANs and IP addresses with "
        "placeholders such as [EMAIL].",
    )
    include_near_duplicates = forms.BooleanField(
        required=False,
        label="Include near-duplicates",
        help_text="Also write approved dialogues that nearly repeat an earlier one (left out "
        "by default).",
    )


def _export_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    filters: export.ExportFilters,
    action: str,
    title: str,
) -> HttpResponse | None:
    if not request.user.has_perm("review.add_datasetexport"):
        modeladmin.message_user(
            request, "You do not have permission to export datasets.", messages.ERROR
        )
        return None
    counts = export.selection_breakdown(filters)
    form = ExportForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        options = export.ExportOptions(
            form.cleaned_data["format"],
            form.cleaned_data["include_system"],
            form.cleaned_data["scrub_pii"],
        )
        filters = replace(
            filters, include_near_duplicates=form.cleaned_data["include_near_duplicates"]
        )
        try:
            record = export.dataset_export_start(
                options=options, filters=filters, created_by=request.user
            )
        except export.EmptyExportError as exc:
            modeladmin.message_user(request, str(exc), messages.ERROR)
            return None
        modeladmin.message_user(request, _outcome_message(record), _outcome_level(record))
        return HttpResponseRedirect(reverse("admin:review_datasetexport_change", args=[record.pk]))
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "form": form,
        "queryset": queryset,
        # Posted back as they came. With "select all" the admin acts on the whole changelist
        # (its filters are in this page's address) but still wants the ticked ids of the page.
        "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": "1" if _selects_all(request) else "0",
        "action": action,
        "approved": counts.approved,
        "not_approved": counts.not_approved,
        "near_duplicates": counts.near_duplicate,
        "selected_count": queryset.count(),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "background": bool(settings.CELERY_BROKER_URL)
        and counts.approved > settings.SYNTHREVIEW_EXPORT_INLINE_MAX,
    }
    return TemplateResponse(request, "admin/review/export_intermediate.html", context)


def _skipped(record: DatasetExport) -> str:
    """Why dialogues were left out: from the manifest once done, else what may leave them
    out (not approved, and near-duplicates unless the export includes them)."""
    near = record.manifest.get("counts", {}).get("dialogues_skipped_near_duplicate", 0)
    if near:
        not_approved = record.skipped_count - near
        return f"{record.skipped_count} skipped: {not_approved} not approved, {near} near-duplicate"
    if record.status == DatasetExport.Status.DONE or record.filters.get("include_near_duplicates"):
        return f"{record.skipped_count} skipped: not approved"
    return f"{record.skipped_count} skipped: not approved or near-duplicate"


def _outcome_message(record: DatasetExport) -> str:
    skipped = _skipped(record)
    if record.status == DatasetExport.Status.DONE:
        counts = record.manifest.get("counts", {})
        unusable = counts.get("dialogues_skipped_no_assistant_turn", 0) + counts.get(
            "dialogues_without_pairs", 0
        )
        if unusable:
            reason = "no corrections" if record.format == "dpo" else "no assistant turn"
            skipped += f", {unusable} skipped: {reason}"
        return (
            f"{record.exported_count} exported, {skipped}. "
            f"{record.record_count} records written ({record.get_format_display()})."
        )
    if record.status == DatasetExport.Status.FAILED:
        return f"Export failed: {record.error}"
    return (
        f"Export #{record.pk} is running in the background: {record.total_count} approved "
        f"dialogues, {skipped}. This page shows its progress."
    )


def _outcome_level(record: DatasetExport) -> int:
    return messages.ERROR if record.status == DatasetExport.Status.FAILED else messages.SUCCESS


# Changelist parameters that order or page the list, never narrow it.
_VIEW_PARAMS = frozenset({"o", "p", "e"})


def _selects_all(request: HttpRequest) -> bool:
    return request.POST.get("select_across") == "1"


def _whole_list_filters(request: HttpRequest) -> export.ExportFilters | None:
    """A "select all" over every row, or every row of one scenario, as export filters; None
    when the selection is hand-picked or narrowed in a way the filters cannot say."""
    if not _selects_all(request):
        return None
    params = {key: request.GET.getlist(key) for key in request.GET if key not in _VIEW_PARAMS}
    if not params:
        return export.ExportFilters()
    scenario = params.pop("scenario__id__exact", None)
    if params or not scenario or len(scenario) != 1 or not scenario[0].isdigit():
        return None
    slug = Scenario.objects.filter(pk=int(scenario[0])).values_list("slug", flat=True).first()
    return export.ExportFilters(scenario=slug) if slug else None


def _ids(queryset: QuerySet) -> tuple[int, ...]:
    return tuple(sorted(queryset.values_list("pk", flat=True)))


def _selection(request: HttpRequest, queryset: QuerySet, field: str) -> export.ExportFilters:
    whole = _whole_list_filters(request)
    return whole if whole is not None else export.ExportFilters(**{field: _ids(queryset)})


@admin.action(description="Export selected as training set")
def export_dialogues_action(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    return _export_action(
        modeladmin,
        request,
        queryset,
        filters=_selection(request, queryset, "dialogue_ids"),
        action="export_dialogues_action",
        title="Export selected dialogues as a training set",
    )


@admin.action(description="Export the selected reviews' dialogues as training set")
def export_reviews_action(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    # A review's primary key is its dialogue's. Only dialogues somebody opened have a review,
    # so even "select all" here is a list of those, never the whole dialogue table.
    return _export_action(
        modeladmin,
        request,
        queryset,
        filters=export.ExportFilters(dialogue_ids=_ids(queryset)),
        action="export_reviews_action",
        title="Export the dialogues of the selected reviews as a training set",
    )


@admin.action(description="Export approved dialogues")
def export_runs_action(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    return _export_action(
        modeladmin,
        request,
        queryset,
        filters=_selection(request, queryset, "run_ids"),
        action="export_runs_action",
        title="Export the approved dialogues of the selected runs",
    )


@admin.register(DatasetExport)
class DatasetExportAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "format",
        "status",
        "progress",
        "who",
        "created_at",
        "exported_count",
        "skipped_count",
        "record_count",
        "download_link",
    ]
    list_filter = ["format", "status", "source", "scrub_pii"]
    list_select_related = ["created_by"]
    date_hierarchy = "created_at"
    fields = [
        "format",
        "status",
        "who",
        "source",
        "created_at",
        "started_at",
        "finished_at",
        "filters_display",
        "include_system",
        "scrub_pii",
        "total_count",
        "exported_count",
        "skipped_count",
        "record_count",
        "sha256",
        "download_link",
        "output_path",
        "error",
        "manifest_display",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # exports start from the dialogue and run actions, or the command line

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/download/", wrap(self.download_view), name="review_datasetexport_download"
            ),
            path(
                "<int:pk>/manifest/", wrap(self.manifest_view), name="review_datasetexport_manifest"
            ),
            path(
                "<int:pk>/progress/", wrap(self.progress_view), name="review_datasetexport_progress"
            ),
            *super().get_urls(),
        ]

    def _get_viewable(self, request: HttpRequest, pk: int) -> DatasetExport:
        record = self.get_object(request, str(pk))
        if record is None:
            raise Http404("No such export.")
        if not self.has_view_permission(request, record):
            raise PermissionDenied
        return record

    def download_view(self, request: HttpRequest, pk: int) -> FileResponse:
        record = self._get_viewable(request, pk)
        if record.status != DatasetExport.Status.DONE or not record.file:
            raise Http404("This export has no file.")
        try:
            handle = record.file.open("rb")
        except FileNotFoundError:
            raise Http404("The export file is missing from MEDIA_ROOT.") from None
        return FileResponse(
            handle,
            as_attachment=True,
            filename=Path(record.file.name).name,
            content_type="application/jsonl; charset=utf-8",
        )

    def manifest_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        record = self._get_viewable(request, pk)
        if not record.manifest:
            raise Http404("This export has no manifest.")
        response = HttpResponse(
            export.manifest_bytes(record.manifest), content_type="application/json"
        )
        name = export.manifest_path_for(Path(record.file.name or f"export-{pk}.jsonl")).name
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    def progress_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        record = self._get_viewable(request, pk)
        return TemplateResponse(
            request,
            "admin/review/datasetexport/change_form.html#progress",
            {"original": record, "opts": self.model._meta},
        )

    @admin.display(description="Who")
    def who(self, obj: DatasetExport) -> str:
        if obj.created_by_id:
            return obj.created_by.get_username()
        if obj.source == DatasetExport.Source.CLI:
            return f"{obj.requested_by or 'unknown'} (command line)"
        return "-"

    @admin.display(description="File")
    def download_link(self, obj: DatasetExport) -> str:
        if obj.status != DatasetExport.Status.DONE or not obj.file:
            return "-"
        return format_html(
            '<a href="{}">Download</a> · <a href="{}">manifest</a>',
            reverse("admin:review_datasetexport_download", args=[obj.pk]),
            reverse("admin:review_datasetexport_manifest", args=[obj.pk]),
        )

    @admin.display(description="Progress")
    def progress(self, obj: DatasetExport) -> str:
        return format_html(
            '<progress max="100" value="{}">{}%</progress> {}%',
            obj.progress_percent,
            obj.progress_percent,
            obj.progress_percent,
        )

    @admin.display(description="Filters")
    def filters_display(self, obj: DatasetExport) -> str:
        filters = dict(obj.filters)
        ids = filters.pop("dialogue_ids", None)
        parts = [f"{capfirst(key.replace('_', ' '))}: {value}" for key, value in filters.items()]
        if ids is not None:
            parts.append(f"{len(ids)} selected dialogues")
        return "; ".join(parts) or "all approved dialogues"

    @admin.display(description="Manifest")
    def manifest_display(self, obj: DatasetExport) -> str:
        if not obj.manifest:
            return "-"
        manifest = {**obj.manifest, "filters": dict(obj.manifest.get("filters", {}))}
        ids = manifest["filters"].get("dialogue_ids")
        if ids is not None:
            # A "select all" export lists thousands of ids; the download has them all.
            manifest["filters"]["dialogue_ids"] = f"{len(ids)} ids (in the manifest download)"
        return format_html("<pre>{}</pre>", json.dumps(manifest, indent=2, sort_keys=True))

    def delete_model(self, request: HttpRequest, obj: DatasetExport) -> None:
        _delete_files(obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            _delete_files(obj)
        super().delete_queryset(request, queryset)


def _delete_files(record: DatasetExport) -> None:
    if record.file:
        manifest = export.manifest_path_for(Path(record.file.name)).as_posix()
        record.file.storage.delete(manifest)
        record.file.delete(save=False)
