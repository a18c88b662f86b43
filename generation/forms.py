"""Admin forms: scenario and persona validation, and the run launch form."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from . import rules
from .models import (
    Endpoint,
    GenerationRun,
    Persona,
    Scenario,
    default_endpoint_id,
    persona_sides_problem,
)


def _check_template(value: str) -> None:
    try:
        unknown = rules.unknown_placeholders(value)
    except ValueError as exc:
        raise ValidationError(
            f"Not a valid template ({exc}). Write {{{{ and }}}} for literal braces."
        ) from None
    if unknown:
        known = ", ".join("{" + name + "}" for name in rules.PLACEHOLDERS)
        bad = ", ".join("{" + name + "}" for name in unknown)
        raise ValidationError(
            f"Unknown placeholder {bad}. Use {known}; write {{{{ and }}}} for literal braces."
        )


class ScenarioForm(forms.ModelForm):
    topics = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One topic per line. Each dialogue gets one (in order, or sampled by seed).",
        error_messages={"required": "Give at least one topic (one per line)."},
    )

    class Meta:
        model = Scenario
        fields = [
            "slug",
            "name",
            "description",
            "opening_instruction",
            "topics",
            "topic_order",
            "min_turns",
            "max_turns",
            "end_marker",
        ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and isinstance(self.instance.topics, list):
            self.initial["topics"] = "\n".join(str(t) for t in self.instance.topics)

    def clean_topics(self) -> list[str]:
        raw = self.cleaned_data["topics"]
        topics = [line.strip() for line in raw.splitlines() if line.strip()]
        if not topics:
            raise ValidationError("Give at least one topic.")
        too_long = [t for t in topics if len(t) > 500]
        if too_long:
            raise ValidationError(f"Topics are limited to 500 characters: {too_long[0][:40]}…")
        return topics

    def clean_opening_instruction(self) -> str:
        value = self.cleaned_data["opening_instruction"]
        if not value.strip():
            raise ValidationError("The opening instruction cannot be empty.")
        _check_template(value)
        return value

    def clean(self) -> dict:
        data = super().clean()
        low, high = data.get("min_turns"), data.get("max_turns")
        if low is not None and high is not None and low > high:
            self.add_error("min_turns", f"Min turns ({low}) cannot exceed max turns ({high}).")
        return data

    def validate_constraints(self, exclude=None) -> None:
        # clean() already names the field for min > max; skip the duplicate constraint message.
        pass


class PersonaForm(forms.ModelForm):
    class Meta:
        model = Persona
        fields = [
            "position",
            "name",
            "side",
            "opens",
            "system_prompt",
            "endpoint",
            "model",
            "temperature",
            "max_tokens",
        ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["endpoint"].required = False
        self.fields["endpoint"].empty_label = "default"
        self.fields["endpoint"].help_text = "Empty: the default endpoint (OPENAI_BASE_URL)."

    def clean_endpoint(self) -> Endpoint:
        return self.cleaned_data["endpoint"] or Endpoint.objects.get(pk=default_endpoint_id())

    def clean_system_prompt(self) -> str:
        value = self.cleaned_data["system_prompt"]
        if not value.strip():
            raise ValidationError("The system prompt cannot be empty.")
        return value

    def clean_name(self) -> str:
        value = self.cleaned_data["name"].strip()
        if not value:
            raise ValidationError("Give the persona a name.")
        return value


class PersonaFormSet(forms.BaseInlineFormSet):
    """Exactly two personas, positions 0 and 1, one of them opening, with different names,
    one on the user side and one on the assistant side."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        forms_kept = [
            f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE", False)
        ]
        if len(forms_kept) != 2:
            raise ValidationError("A scenario has exactly two personas.")
        positions = sorted(f.cleaned_data["position"] for f in forms_kept)
        if positions != [0, 1]:
            raise ValidationError("The two personas need positions 0 and 1.")
        if sum(bool(f.cleaned_data.get("opens")) for f in forms_kept) != 1:
            raise ValidationError("Exactly one persona opens the dialogue (tick 'opens' once).")
        names = {f.cleaned_data["name"].lower() for f in forms_kept}
        if len(names) != 2:
            raise ValidationError("The two personas need different names.")
        problem = persona_sides_problem([f.cleaned_data["side"] for f in forms_kept])
        if problem:
            raise ValidationError(problem)


class LaunchRunForm(forms.Form):
    scenario = forms.ModelChoiceField(queryset=Scenario.objects.order_by("name"))
    count = forms.IntegerField(
        label="Number of dialogues", min_value=1, max_value=100_000, initial=10
    )
    model_override = forms.CharField(
        label="Model override",
        required=False,
        max_length=200,
        help_text="Empty: each persona's model, else its endpoint's default model.",
    )
    endpoint_override = forms.ModelChoiceField(
        label="Endpoint override",
        queryset=Endpoint.objects.order_by("name"),
        required=False,
        empty_label="Each persona's own endpoint",
        help_text="Both personas call this endpoint (with the model override, else its default "
        "model).",
    )
    temperature_override = forms.FloatField(
        label="Temperature override", required=False, min_value=0.0, max_value=2.0
    )
    max_in_flight = forms.IntegerField(
        label="Max requests in flight",
        min_value=1,
        max_value=10_000,
        initial=64,
        help_text="Caps this run's concurrent LLM requests (respect the provider's rate limits).",
    )
    seed = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=2**62,
        help_text="Empty: random. Same seed, same sampled topics.",
    )

    def clean_model_override(self) -> str:
        return self.cleaned_data["model_override"].strip()

    def clean_scenario(self) -> Scenario:
        from .services import ScenarioNotReady, scenario_check_ready

        scenario = self.cleaned_data["scenario"]
        try:
            scenario_check_ready(scenario=scenario)
        except ScenarioNotReady as exc:
            raise ValidationError(str(exc)) from None
        return scenario

    def clean(self) -> dict:
        """Refuses an endpoint whose API key variable is not set, before the run exists."""
        from .services import EndpointNotReady, endpoints_check

        data = super().clean()
        if "scenario" in data and "model_override" in data:
            try:
                endpoints_check(
                    scenario=data["scenario"],
                    endpoint_override=data.get("endpoint_override"),
                    model_override=data["model_override"],
                )
            except EndpointNotReady as exc:
                raise ValidationError(str(exc)) from None
        return data

    @staticmethod
    def unknown_price_warning(model: str) -> str:
        if model and model not in settings.SYNTHREVIEW_MODEL_PRICES:
            return f"No price configured for {model!r}: its cost will show as $0."
        return ""


__all__ = ["GenerationRun", "LaunchRunForm", "PersonaForm", "PersonaFormSet", "ScenarioForm"]
