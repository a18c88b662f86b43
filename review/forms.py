"""Input parsing for the review screens. Business rules live in services; these only turn
request data into typed values (bad ids and versions become form errors, not 500s)."""

from __future__ import annotations

from django import forms

from generation.models import GenerationRun, Scenario
from review.models import Flag
from review.selectors import QUEUE_ORDERS, QUEUE_STATUSES, QueueFilters


class QueueFilterForm(forms.Form):
    run = forms.ModelChoiceField(
        queryset=GenerationRun.objects.select_related("scenario").order_by("-created_at"),
        required=False,
        empty_label="All runs",
    )
    scenario = forms.ModelChoiceField(
        queryset=Scenario.objects.order_by("name"), required=False, empty_label="All scenarios"
    )
    status = forms.ChoiceField(choices=list(QUEUE_STATUSES.items()), required=False)
    warnings = forms.ChoiceField(
        choices=[("", "With or without warnings"), ("yes", "With warnings"), ("no", "Without")],
        required=False,
        label="Automatic warnings",
    )
    judge = forms.ChoiceField(
        choices=[("", "Any or none"), *Flag.Category.choices],
        required=False,
        label="Judge marked",
    )
    order = forms.ChoiceField(choices=list(QUEUE_ORDERS.items()), required=False)
    variable = forms.CharField(
        required=False,
        max_length=250,
        label="Variable",
        help_text="A scenario variable's value, e.g. level=beginner.",
    )

    def filters(self) -> QueueFilters:
        """The filters, ignoring any invalid value (a stale link still shows a queue)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        run, scenario = data.get("run"), data.get("scenario")
        warnings = {"yes": True, "no": False}.get(data.get("warnings") or "")
        name, sep, value = (data.get("variable") or "").partition("=")
        return QueueFilters(
            run_id=run.pk if run else None,
            scenario_id=scenario.pk if scenario else None,
            status=data.get("status") or "awaiting",
            warnings=warnings,
            order=data.get("order") or "run",
            judge_category=data.get("judge") or "",
            variable=(name.strip(), value.strip()) if sep and name.strip() else None,
        )


class VersionForm(forms.Form):
    version = forms.IntegerField(min_value=1)


class TurnEditForm(VersionForm):
    # Not stripped and not required here: the service gives the reviewer-facing message.
    text = forms.CharField(required=False, strip=False)


class FlagForm(forms.Form):
    category = forms.ChoiceField(choices=Flag.Category.choices)
    note = forms.CharField(required=False, max_length=2000)


class DismissForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000)


class NoFieldsForm(forms.Form):
    """For actions whose URL says everything (accept or dismiss a judge suggestion)."""


class ReasonForm(VersionForm):
    reason = forms.CharField(required=False, max_length=5000)
