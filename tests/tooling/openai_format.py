"""A validator for OpenAI's chat fine-tuning JSONL format.

Implements the checks of OpenAI's "Data preparation and analysis for chat model fine-tuning"
cookbook and the fine-tuning guide's format section, stricter where the docs allow optional
extras we never write:

- every line is UTF-8 JSON holding an object (``data_type``);
- the object has a non-empty ``messages`` list (``missing_messages_list``) and no other
  top-level key (``unknown_example_keys``; the docs also allow ``tools``/``functions`` and
  ``parallel_tool_calls``, which an export without tools must not emit);
- every message is an object with ``role`` and ``content`` (``message_missing_key``) and no
  unrecognised key (``message_unrecognized_key``; ``weight`` is accepted on assistant messages
  with value 0 or 1, as documented);
- ``role`` is system, user or assistant (``unrecognized_role``);
- ``content`` is a non-empty string (``missing_content``: OpenAI rejects empty/blank content);
- at least one assistant message (``example_missing_assistant_message``);
- a system message, if any, comes first (our contract; OpenAI trains on it anywhere);
- a file holds at least ``min_examples`` examples (OpenAI requires 10 for a job).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

ROLES = {"system", "user", "assistant"}
MESSAGE_KEYS = {"role", "content", "weight"}


def validate_example(example: object) -> list[str]:
    """The error codes of one parsed example (empty: valid)."""
    if not isinstance(example, dict):
        return ["data_type"]
    errors: list[str] = []
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["missing_messages_list"]
    if set(example) - {"messages"}:
        errors.append("unknown_example_keys")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            errors.append("data_type")
            continue
        if "role" not in message or "content" not in message:
            errors.append("message_missing_key")
        if set(message) - MESSAGE_KEYS:
            errors.append("message_unrecognized_key")
        if "weight" in message and (
            message.get("role") != "assistant" or message["weight"] not in (0, 1)
        ):
            errors.append("invalid_weight")
        if message.get("role") not in ROLES:
            errors.append("unrecognized_role")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            errors.append("missing_content")
        if message.get("role") == "system" and index != 0:
            errors.append("system_not_first")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        errors.append("example_missing_assistant_message")
    return errors


def validate_file(path: Path, *, min_examples: int = 1) -> Counter[str]:
    """Error codes over a JSONL file, counted (empty Counter: the file passes)."""
    errors: Counter[str] = Counter()
    examples = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.strip():
                errors["blank_line"] += 1
                continue
            try:
                example = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                errors["invalid_json"] += 1
                continue
            examples += 1
            errors.update(validate_example(example))
    if examples < min_examples:
        errors["too_few_examples"] += 1
    return errors
