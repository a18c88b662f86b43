"""Admin forms: scenario and persona validation, and the run launch form."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from . import rules, variables
from .models import (
    Endpoint,
    GenerationRun,
    Persona,
    Scenario,
    default_endpoint_id,
    persona_sides_problem,
)


def _check_template(value: str, variable_names: list[str] | tuple[str, ...] = ()) -> None:
    try:
        unknown = rules.unknown_placeholders(value, variable_names)
    except ValueError as exc:
        raise ValidationError(
            f"Not a valid template ({exc}). Write {{{{ and }}}} for literal braces."
        ) from None
    if unknown:
        known = ", ".join("{" + name + "}" for name in (*rules.PLACEHOLDERS, *variable_names))
        bad = ", ".join("{" + name + "}" for name in unknown)
        hint = "" if variable_names else " or define it as a scenario variable"
        raise ValidationError(
            f"Unknown placeholder {bad}. Use {known}{hint}; write {{{{ and }}}} for literal braces."
        )


class ScenarioForm(forms.ModelForm):
    topics = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One topic per line. Each dialogue gets one (in order, or sampled by seed).",
        error_messages={"required": "Give at least one topic (one per line)."},
    )
    variables = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One variable per line, e.g. level: beginner*3 | confident | struggling "
        "(a *number after a value is its weight). Each dialogue gets one "
        "value of each, sampled with the run's seed; use them as {level} in the opening "
        "instruction and the system prompts.",
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
            "variables",
            "min_turns",
            "max_turns",
            "end_marker",
        ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and isinstance(self.instance.topics, list):
            self.initial["topics"] = "\n".join(str(t) for t in self.instance.topics)
        if self.instance.pk:
            self.initial["variables"] = variables.unparse(
                variables.variables_of(self.instance.variables)
            )

    def clean_variables(self) -> list[dict]:
        try:
            parsed = variables.parse(self.cleaned_data["variables"])
        except variables.VariableError as exc:
            raise ValidationError(str(exc)) from None
        return [variable.as_json() for variable in parsed]

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
        return value

    def clean(self) -> dict:
        data = super().clean()
        opening = data.get("opening_instruction")
        if opening and "variables" in data:
            try:
                _check_template(opening, variables.names_of(data["variables"]))
            except ValidationError as exc:
                self.add_error("opening_instruction", exc)
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
        try:
            rules.template_fields(value)
        except ValueError as exc:
            raise ValidationError(
                f"Not a valid template ({exc}). Write {{{{ and }}}} for literal braces."
            ) from None
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
        # The scenario form's variables, already applied to the instance when it is valid.
        names = variables.names_of(self.instance.variables)
        for form in forms_kept:
            try:
                _check_template(form.cleaned_data["system_prompt"], names)
            except ValidationError as exc:
                form.add_error("system_prompt", exc)


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
        help_text="Empty: random. Same seed, same sampled topics and variable values.",
    )
    variable_coverage = forms.TypedChoiceField(
        label="Variable coverage",
        required=False,
        empty_value=GenerationRun.VariableCoverage.SAMPLED.value,
        choices=GenerationRun.VariableCoverage.choices,
        initial=GenerationRun.VariableCoverage.SAMPLED,
        help_text="Balanced: every combination of the scenario's variable values equally often.",
    )
    oversample = forms.CharField(
        label="Over-sample",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Rare values to generate more often, one per line: "
        "pattern = account takeover * 5 (5 times its weight, or its share when balanced).",
    )

    def clean_model_override(self) -> str:
        return self.cleaned_data["model_override"].strip()

    def clean(self) -> dict:
        data = super().clean()
        scenario = data.get("scenario")
        if scenario is None:
            return data
        self._check_endpoints(data)
        self._check_variables(data, scenario)
        return data

    def _check_endpoints(self, data: dict) -> None:
        """Refuses an endpoint whose API key variable is not set, before the run exists."""
        from .services import EndpointNotReady, endpoints_check

        if "model_override" not in data:
            return
        try:
            endpoints_check(
                scenario=data["scenario"],
                endpoint_override=data.get("endpoint_override"),
                model_override=data["model_override"],
            )
        except EndpointNotReady as exc:
            self.add_error(None, str(exc))

    def _check_variables(self, data: dict, scenario: Scenario) -> None:
        defined = variables.variables_of(scenario.variables)
        try:
            data["oversample"] = variables.parse_oversample(data.get("oversample", ""), defined)
        except variables.VariableError as exc:
            self.add_error("oversample", str(exc))
            return
        balanced = data.get("variable_coverage") == GenerationRun.VariableCoverage.BALANCED
        if balanced and not defined:
            self.add_error("variable_coverage", f"{scenario} has no variables to balance.")
        elif balanced and variables.combinations(defined) > variables.MAX_COMBINATIONS:
            self.add_error(
                "variable_coverage",
                f"Balanced coverage needs at most {variables.MAX_COMBINATIONS} combinations; "
                f"{scenario}'s variables have {variables.combinations(defined)}.",
            )

    def clean_scenario(self) -> Scenario:
        from .services import ScenarioNotReady, scenario_check_ready

        scenario = self.cleaned_data["scenario"]
        try:
            scenario_check_ready(scenario=scenario)
        except ScenarioNotReady as exc:
            raise ValidationError(str(exc)) from None
        return scenario

    @staticmethod
    def unknown_price_warning(model: str) -> str:
        if model and model not in settings.SYNTHREVIEW_MODEL_PRICES:
            return f"No price configured for {model!r}: its cost will show as $0."
        return ""


__all__ = ["GenerationRun", "LaunchRunForm", "PersonaForm", "PersonaFormSet", "ScenarioForm"]
