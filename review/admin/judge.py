"""The scenarios' judges, and their passes (read-only: what failed and what it cost)."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from review.judge.prompt import DEFAULT_RUBRIC
from review.models import Flag, JudgeConfig, Judgement


class JudgeConfigForm(forms.ModelForm):
    categories = forms.MultipleChoiceField(
        choices=Flag.Category.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The flag categories the judge may use (none ticked: all of them).",
    )

    class Meta:
        model = JudgeConfig
        fields = [
            "scenario",
            "enabled",
            "endpoint",
            "model",
            "rubric",
            "categories",
            "severity_max",
        ]


@admin.register(JudgeConfig)
class JudgeConfigAdmin(admin.ModelAdmin):
    """A scenario's judge (optional): it reads every completed dialogue and suggests flags."""

    form = JudgeConfigForm
    list_display = ["scenario", "enabled", "endpoint", "model", "severity_max"]
    list_select_related = ["scenario", "endpoint"]
    autocomplete_fields = ["scenario"]

    def get_changeform_initial_data(self, request):
        return {"rubric": DEFAULT_RUBRIC, **super().get_changeform_initial_data(request)}


@admin.register(Judgement)
class JudgementAdmin(admin.ModelAdmin):
    list_display = ["dialogue", "status", "mark_count", "dropped", "calls", "cost_usd", "error"]
    list_filter = ["status"]
    list_select_related = ["dialogue"]
    search_fields = ["error"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
