"""The demo provider's scripted judge: it marks most of the demo scripts' deliberate mistakes
(`demo.SCRIPTS`, the turns marked `# mistake`), misses one, and marks a few correct turns,
so the demo shows suggestions to accept, suggestions to dismiss and imperfect judge figures.
The wrong marks (`RIGHT` False below) are made on about half of the dialogues, chosen by a hash
of the transcript, so the same dialogue always gets the same answer.

It recognises a turn by a phrase of its scripted text. Reviewers' corrections change the text,
so a corrected turn is no longer marked on a later pass.
"""

from __future__ import annotations

import hashlib
import json

RIGHT, WRONG = True, False

# scenario slug -> (phrase in the turn, category, severity, rationale, whether the mark is right)
SCRIPTED_MARKS: dict[str, list[tuple[str, str, int, str, bool]]] = {
    "trig-tutoring": [
        ("add up to the radius", "reasoning", 3,
         "cos x + sin x = 1 is false (try x = 45°); squaring it does not give the identity.", RIGHT),
        ("sine is always the larger one", "factual", 3,
         "The values are swapped: sin 30° = 1/2 and cos 30° = √3/2.", RIGHT),
        # The cancellation mistake ("cancelling gives ... = \\cos x") is missed on purpose.
        # Wrong marks: the 30-60-90 turn and the unit-circle turn are correct.
        ("30-60-90 triangle with sides", "factual", 1,
         "The sides of a 30-60-90 triangle may be misstated.", WRONG),
        ("Picture the **unit circle**", "off_topic", 1,
         "Talks about the unit circle instead of answering the question.", WRONG),
    ],
    "card-fraud-report": [
        ("three-digit security code", "unsafe", 3,
         "Asks for the full card number and the security code, which a bank never does.", RIGHT),
        ("can't be refunded", "factual", 3,
         "Unauthorised card payments reported promptly are refundable.", RIGHT),
        ("we will never ask for your PIN", "tone", 1, "Sounds like a lecture to the customer.", WRONG),
    ],
    "gp-hypertension": [
        ("single reading above 140/90 is enough", "factual", 3,
         "One raised reading does not diagnose hypertension; home or ambulatory readings do.", RIGHT),
        ("simply stop the tablets yourself", "unsafe", 3,
         "Stopping blood-pressure medication without medical advice is unsafe.", RIGHT),
        ("Aim for less than 6 g a day", "factual", 2, "The daily salt limit is stated wrongly.", WRONG),
    ],
}  # fmt: skip


def scripted_judgement(context: dict[str, object]) -> str:
    """The judge's answer as JSON text, for the transcript in `context["turns"]`."""
    turns = [str(text) for text in context.get("turns") or []]  # type: ignore[union-attr]
    allowed = set(context.get("categories") or ())  # type: ignore[arg-type]
    top = int(context.get("severity_max") or 3)  # type: ignore[arg-type]
    suspicious = hashlib.sha256("\n".join(turns).encode()).digest()[0] % 2 == 0
    marks = [
        {"turn": number, "category": category, "severity": min(severity, top),
         "rationale": rationale}
        for number, text in enumerate(turns, start=1)
        for phrase, category, severity, rationale, right in SCRIPTED_MARKS.get(
            str(context.get("scenario", "")), []
        )
        if phrase in text
        and (not allowed or category in allowed)
        and (right or suspicious)
    ]  # fmt: skip
    return json.dumps({"marks": marks})
