"""Dataset export admin: the "Export selected as training set" actions and export records.

`export_dialogues_action` and `export_runs_action` are attached to the Dialogue and
GenerationRun admins in generation/admin.py.
"""

from __future__ import annotations

from django.contrib import admin, messages


@admin.action(description="Export selected as training set")
def export_dialogues_action(modeladmin, request, queryset):
    messages.error(request, "Export is not available yet.")


@admin.action(description="Export approved dialogues")
def export_runs_action(modeladmin, request, queryset):
    messages.error(request, "Export is not available yet.")
