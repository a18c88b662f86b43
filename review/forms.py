"""Input parsing for the review screens. Business rules live in services; these only turn
request data into typed values (bad ids and versions become form errors, not 500s)."""

from __future__ import annotations

from django import forms

from generation.models import GenerationRun, Scenario
from review.models import Flag
from review.selectors import QUEUE_FILTERS, QUEUE_ORDERINGS, QUEUE_STATUSES, QueueFilters
from review.selectors.facets import SHOWN as FACETS_SHOWN


def assignee_choices(users: list, groups: list) -> list[tuple[str, str]]:
    """Reviewers as "u:<id>" and groups as "g:<id>", the values the queue and bulk forms use."""
    return [(f"u:{user.pk}", user.get_username()) for user in users] + [
        (f"g:{group.pk}", f"Group: {group.name}") for group in groups
    ]


class QueueFilterForm(forms.Form):
    """The queue's filters. The fixed-option filters and the orderings come from the tables
    in review/selectors/queue.py, so one more is one entry there."""

    q = forms.CharField(required=False, max_length=200, label="Search", strip=True)
    run = forms.ModelChoiceField(
        queryset=GenerationRun.objects.select_related("scenario").order_by("-created_at"),
        required=False,
        empty_label="All runs",
    )
    scenario = forms.ModelChoiceField(
        queryset=Scenario.objects.order_by("name"), required=False, empty_label="All scenarios"
    )
    status = forms.ChoiceField(choices=list(QUEUE_STATUSES.items()), required=False)
    assignee = forms.ChoiceField(required=False, label="Assigned to")
    sort = forms.ChoiceField(required=False, label="Sort")
    variable = forms.CharField(
        required=False,
        max_length=250,
        label="Variable",
        help_text="A scenario variable's value, e.g. level=beginner.",
    )

    def __init__(self, *args, assignees: list[tuple[str, str]] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        fixed = [("", "Anyone or nobody"), ("me", "Me or my groups"), ("none", "Nobody")]
        self.fields["assignee"].choices = fixed + list(assignees)
        self.fields["sort"].choices = [(key, o.label) for key, o in QUEUE_ORDERINGS.items()]
        for name, spec in QUEUE_FILTERS.items():
            options = [(value, label) for value, (label, _) in spec.options.items()]
            self.fields[name] = forms.ChoiceField(
                choices=[("", "Any")] + options, required=False, label=spec.label
            )

    @property
    def choice_fields(self) -> list:
        return [self[name] for name in QUEUE_FILTERS]

    def facet_choices(self) -> dict[str, tuple[str, list[tuple[str, str]]]]:
        """Each filter's label and options (value, label), for the counts per filter."""
        return {
            name: (str(self.fields[name].label or name.capitalize()),
                   [(str(value), str(label)) for value, label in self.fields[name].choices])
            for name in FACETS_SHOWN
        }  # fmt: skip

    def filters(self) -> QueueFilters:
        """The filters, ignoring any invalid value (a stale link still shows a queue)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        run, scenario = data.get("run"), data.get("scenario")
        name, sep, value = (data.get("variable") or "").partition("=")
        return QueueFilters(
            run_id=run.pk if run else None,
            scenario_id=scenario.pk if scenario else None,
            status=data.get("status") or "awaiting",
            assignee=data.get("assignee") or "",
            search=data.get("q") or "",
            choices=tuple((name, data[name]) for name in QUEUE_FILTERS if data.get(name)),
            ordering=data.get("sort") or "queue",
            variable=(name.strip(), value.strip()) if sep and name.strip() else None,
        )


class BulkForm(forms.Form):
    """Staff actions on the dialogues ticked in the queue."""

    ACTIONS = [("assign", "Assign to"), ("release", "Release claims"), ("reject", "Reject")]

    ids = forms.TypedMultipleChoiceField(coerce=int, choices=[], required=True)
    action = forms.ChoiceField(choices=ACTIONS)
    assignee = forms.ChoiceField(required=False)
    reason = forms.CharField(required=False, max_length=5000)

    def __init__(self, *args, assignees: list[tuple[str, str]] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["assignee"].choices = [("", "Nobody (unassign)")] + list(assignees)
        # Any id is acceptable input; the services skip what they must not touch.
        self.fields["ids"].valid_value = lambda value: str(value).isdigit()

    def clean_ids(self) -> list[int]:
        ids = self.cleaned_data["ids"]
        if len(ids) > 500:
            raise forms.ValidationError("Choose at most 500 dialogues at once.")
        return ids


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
