"""Scenario variables: named lists of values a dialogue is written with, sampled per dialogue.

A scenario stores them as `[{"name": "level", "values": [...], "weights": [...]}]`; admins
write one per line, `level: beginner*3 | confident | struggling` (a `*number` after a value
is its weight, 1 when left out). Each dialogue of a run gets one value of each, drawn with the
run's seed: by weight, or balanced (every combination equally often). A run may over-sample
named values (`pattern = account takeover * 5`: that value's weight, or its share of the
balanced cycle, times five). No database access here.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .rules import PLACEHOLDERS as BUILTIN_NAMES

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Balanced coverage cycles through every combination; beyond this many it is not a plan.
MAX_COMBINATIONS = 10_000
MAX_FACTOR = 100
_WEIGHT_RE = re.compile(r"^(?P<value>.*?)\s*\*\s*(?P<weight>[0-9]+(?:\.[0-9]+)?)$")


class VariableError(ValueError):
    """A variable definition or an over-sampling request that cannot be used (the message
    says what to write instead)."""


@dataclass(frozen=True)
class Variable:
    name: str
    values: tuple[str, ...]
    weights: tuple[float, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "values": list(self.values), "weights": list(self.weights)}


def variables_of(data: Any) -> list[Variable]:
    """The variables stored on a scenario (its JSON), skipping malformed entries."""
    found = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict) or not item.get("values"):
            continue
        values = tuple(str(value) for value in item["values"])
        weights = item.get("weights") or [1] * len(values)
        if len(weights) != len(values):
            weights = [1] * len(values)
        found.append(Variable(str(item.get("name", "")), values, tuple(map(float, weights))))
    return found


def names_of(data: Any) -> list[str]:
    return [variable.name for variable in variables_of(data)]


def parse(text: str) -> list[Variable]:
    """Variables from the admin's lines (`name: value | value*weight`); VariableError names
    the line that is wrong."""
    found: list[Variable] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep:
            raise VariableError(f"Line {number}: write `name: value | value | value`.")
        if not NAME_RE.fullmatch(name):
            raise VariableError(
                f"Line {number}: {name!r} is not a variable name: use lower-case letters, "
                "digits and _, starting with a letter (at most 40)."
            )
        if name in BUILTIN_NAMES:
            raise VariableError(f"Line {number}: {{{name}}} is a built-in placeholder already.")
        if name in {variable.name for variable in found}:
            raise VariableError(f"Line {number}: variable {name!r} is defined twice.")
        found.append(_parse_values(number, name, rest))
    return found


def _parse_values(number: int, name: str, rest: str) -> Variable:
    values, weights = [], []
    for raw in rest.split("|"):
        raw = raw.strip()
        match = _WEIGHT_RE.match(raw)
        value, weight = (match["value"], float(match["weight"])) if match else (raw, 1.0)
        if not value:
            raise VariableError(f"Line {number}: {name} has an empty value.")
        if len(value) > 200:
            raise VariableError(f"Line {number}: values are limited to 200 characters.")
        if weight <= 0:
            raise VariableError(f"Line {number}: the weight of {value!r} must be above 0.")
        if value in values:
            raise VariableError(f"Line {number}: {name} lists {value!r} twice.")
        values.append(value)
        weights.append(weight)
    if len(values) < 2:
        raise VariableError(f"Line {number}: give {name} at least two values, separated by |.")
    return Variable(name, tuple(values), tuple(weights))


def unparse(variables: Sequence[Variable]) -> str:
    """The admin's lines for stored variables (weights of 1 left out)."""
    lines = []
    for variable in variables:
        values = [
            value if weight == 1 else f"{value}*{weight:g}"
            for value, weight in zip(variable.values, variable.weights, strict=True)
        ]
        lines.append(f"{variable.name}: {' | '.join(values)}")
    return "\n".join(lines)


def parse_oversample(text: str, variables: Sequence[Variable]) -> dict[str, dict[str, int]]:
    """`name = value * factor` lines (or comma-separated) for the scenario's variables."""
    known = {variable.name: variable for variable in variables}
    found: dict[str, dict[str, int]] = {}
    for item in re.split(r"[\n,]", text):
        if not item.strip():
            continue
        name, sep, rest = item.partition("=")
        match = _WEIGHT_RE.match(rest.strip())
        if not sep or not match or not match["weight"].isdigit():
            raise VariableError(
                f"{item.strip()!r}: write `variable = value * factor`, e.g. `level = struggling * 3`."
            )
        name, value, factor = name.strip(), match["value"], int(match["weight"])
        if name not in known:
            choices = ", ".join(known) or "none"
            raise VariableError(f"Unknown variable {name!r} (this scenario has: {choices}).")
        if value not in known[name].values:
            raise VariableError(
                f"{name} has no value {value!r} (its values: {', '.join(known[name].values)})."
            )
        if not 2 <= factor <= MAX_FACTOR:
            raise VariableError(f"Over-sampling factors go from 2 to {MAX_FACTOR}, got {factor}.")
        found.setdefault(name, {})[value] = factor
    return found


def _factor(oversample: Mapping[str, Mapping[str, int]], name: str, value: str) -> int:
    return int(oversample.get(name, {}).get(value, 1))


def sample(
    variables: Sequence[Variable],
    *,
    count: int,
    seed: int,
    balanced: bool = False,
    oversample: Mapping[str, Mapping[str, int]] | None = None,
) -> list[dict[str, str]]:
    """One {name: value} per dialogue, reproducible from the seed (its own random stream,
    so adding variables does not change which topics a seed picks)."""
    if not variables:
        return [{} for _ in range(count)]
    oversample = oversample or {}
    rng = random.Random(f"variables:{seed}")
    if balanced:
        return _balanced(variables, count, rng, oversample)
    picks = [
        rng.choices(
            variable.values,
            weights=[
                weight * _factor(oversample, variable.name, value)
                for value, weight in zip(variable.values, variable.weights, strict=True)
            ],
            k=count,
        )
        for variable in variables
    ]
    names = [variable.name for variable in variables]
    return [dict(zip(names, values, strict=True)) for values in zip(*picks, strict=True)]


def combinations(variables: Sequence[Variable]) -> int:
    total = 1
    for variable in variables:
        total *= len(variable.values)
    return total


def _balanced(
    variables: Sequence[Variable],
    count: int,
    rng: random.Random,
    oversample: Mapping[str, Mapping[str, int]],
) -> list[dict[str, str]]:
    """Every combination equally often (each over-sampled value's combinations `factor`
    times as often), in shuffled cycles: any count is within one of the plan."""
    if combinations(variables) > MAX_COMBINATIONS:
        raise VariableError(
            f"Balanced coverage needs at most {MAX_COMBINATIONS} combinations of values; "
            f"these variables have {combinations(variables)}."
        )
    names = [variable.name for variable in variables]
    cycle = []
    for values in itertools.product(*(variable.values for variable in variables)):
        repeats = 1
        for name, value in zip(names, values, strict=True):
            repeats *= _factor(oversample, name, value)
        cycle += [dict(zip(names, values, strict=True))] * repeats
    picks: list[dict[str, str]] = []
    while len(picks) < count:
        order = list(cycle)
        rng.shuffle(order)
        picks += order
    return [dict(pick) for pick in picks[:count]]
