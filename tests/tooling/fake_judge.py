"""The fake OpenAI server's judge answers.

A judge request (one asking for the "turn_marks" schema, see review/judge/prompt.py) is
answered from the server's `judge_script`, consumed first (empty: "valid"): valid (`{"marks":
judge_marks}`), fenced (the same in a Markdown fence with a sentence around it), malformed
(cut-off JSON), unknown_turns (judge_marks plus marks on turns 0 and 999 and an unknown
category), refuse_schema (HTTP 400 when the request has a response_format), or one of the
server's faults ("429", "slow", ...).
"""

from __future__ import annotations

import json

JUDGE_ANSWERS = ("valid", "fenced", "malformed", "unknown_turns", "refuse_schema")
# The schema name review/judge/prompt.py asks for, and names in the prompt.
JUDGE_SCHEMA = "turn_marks"


def is_judge_request(payload: dict) -> bool:
    schema = (payload.get("response_format") or {}).get("json_schema") or {}
    if schema.get("name") == JUDGE_SCHEMA:
        return True
    messages = payload.get("messages") or [{}]
    return f'"{JUDGE_SCHEMA}"' in str(messages[0].get("content", ""))


def judge_answer(mode: str, marks: list[dict]) -> str:
    if mode == "fenced":
        return "Here are my marks:\n```json\n" + json.dumps({"marks": marks}) + "\n```\nDone."
    if mode == "malformed":
        return '{"marks": [{"turn": 1, "category": "fact'
    if mode == "unknown_turns":
        extra = [
            {"turn": 0, "category": "factual", "severity": 1, "rationale": "no such turn"},
            {"turn": 999, "category": "factual", "severity": 1, "rationale": "no such turn"},
            {"turn": 1, "category": "spelling", "severity": 1, "rationale": "no such category"},
        ]
        return json.dumps({"marks": [*marks, *extra]})
    return json.dumps({"marks": marks})


def next_judge(state, payload: dict) -> tuple[str | None, str | None]:
    """(fault, answer text) for a judge request; the caller holds the server's lock."""
    state.requests += 1
    state.judge_requests += 1
    mode = state.judge_script.pop(0) if state.judge_script else "valid"
    state.faults_served[mode] = state.faults_served.get(mode, 0) + 1
    if mode == "refuse_schema":
        return ("400", None) if payload.get("response_format") else (None, None)
    if mode in JUDGE_ANSWERS:
        return None, judge_answer(mode, state.judge_marks)
    return mode, None
