"""What the judge is sent: the scenario's rubric, the rules of the answer, the transcript."""

from __future__ import annotations

from collections.abc import Sequence

from generation.models import Scenario, Turn
from review.models import Flag, JudgeConfig

SCHEMA_NAME = "turn_marks"
MAX_TOKENS = 2048

DEFAULT_RUBRIC = (
    "You check synthetic training dialogues before a human expert reviews them. Mark every "
    "turn that states something false, reasons wrongly, leaves its role, drifts off topic, "
    "gives unsafe advice or asks for secrets, or takes a tone its role should not. Do not mark "
    "a turn only because it could be worded better."
)


def response_schema(categories: Sequence[str]) -> dict[str, object]:
    """The OpenAI `response_format` asking for {"marks": [{turn, category, severity,
    rationale}]}; strict, so servers that enforce schemas return nothing else."""
    mark = {
        "type": "object",
        "properties": {
            "turn": {"type": "integer"},
            "category": {"type": "string", "enum": list(categories)},
            "severity": {"type": "integer"},
            "rationale": {"type": "string"},
        },
        "required": ["turn", "category", "severity", "rationale"],
        "additionalProperties": False,
    }
    schema = {
        "type": "object",
        "properties": {"marks": {"type": "array", "items": mark}},
        "required": ["marks"],
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": schema},
    }


def judge_messages(
    *, config: JudgeConfig, scenario: Scenario, turns: Sequence[Turn]
) -> list[dict[str, str]]:
    """The system message (rubric and answer rules) and the transcript, turns numbered from 1."""
    labels = dict(Flag.Category.choices)
    categories = "\n".join(f"- {c}: {labels[c]}" for c in config.allowed_categories())
    rules = (
        f"{config.rubric.strip()}\n\n"
        f'The dialogue below comes from the scenario "{scenario.name}". Its turns are numbered '
        f"from 1 to {len(turns)}. For each problem, give the turn number, one of these "
        f"categories:\n{categories}\n"
        f"a severity from 1 (minor) to {config.severity_max} (serious), and a one-sentence "
        "rationale an expert can check.\n\n"
        f'Answer with one JSON object matching the schema "{SCHEMA_NAME}": '
        '{"marks": [{"turn": 2, "category": "factual", "severity": 2, "rationale": "..."}]}. '
        'If no turn has a problem, answer {"marks": []}. Write nothing but the JSON object.'
    )
    transcript = "\n\n".join(
        f"Turn {index} ({turn.persona.name}, {turn.side}):\n{turn.text}"
        for index, turn in enumerate(turns, start=1)
    )
    return [{"role": "system", "content": rules}, {"role": "user", "content": transcript}]


def reask_message(problem: str) -> dict[str, str]:
    return {
        "role": "user",
        "content": f"Your answer could not be read ({problem}). Answer again with only the "
        f'JSON object {{"marks": [...]}} described above, nothing else.',
    }
