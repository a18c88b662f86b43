"""The offline demo provider: scripted, deterministic dialogues, for any scenario.

It lets `make demo` show the whole loop without a model or a network. The example scenarios
have scripts; any other scenario gets a conversation assembled from generic pieces, with the
personas' names and the topic, of a seeded length within the scenario's turn limits. The text
varies by dialogue and by attempt, so "Regenerate from here" writes something new.

Some scripted turns carry deliberate factual or reasoning mistakes (marked `# mistake` below)
so reviewers have something to catch. Turns are chosen by position, so generation can resume
from any point, including right after a reviewer corrected a turn and asked for the rest to be
redone.
"""

from __future__ import annotations

import hashlib

from .base import ChatRequest, ChatResult
from .demo_judge import scripted_judgement

DEMO_MODEL = "demo-scripted"

# Each entry is one turn position (even: the opening persona, odd: the other one), each a list
# of variants; the variant is picked from a hash of the topic, the dialogue, the attempt and
# the position. The last entry is the closing, used when the dialogue ends at the script's
# length; a scenario whose limits ask for more turns continues with the generic pieces below.
SCRIPTS: dict[str, list[list[str]]] = {
    "trig-tutoring": [
        [
            "Hi! We're doing **{topic}** in class and I'm {level}. Why is "
            "$\\sin^2 x + \\cos^2 x = 1$ always true? It looks like magic to me.",
            "Hello! I'm {level} at the moment. Before we get to {topic}, can you explain where "
            "$\\sin^2 x + \\cos^2 x = 1$ comes from? I just memorised it.",
        ],
        [
            "Good question! Picture the **unit circle**: the point at angle $x$ has coordinates "
            "$(\\cos x, \\sin x)$ and sits at distance 1 from the origin. By Pythagoras:\n\n"
            "$$\\cos^2 x + \\sin^2 x = 1$$\n\nSo the identity is the circle's equation "
            "$x^2 + y^2 = 1$ in disguise.",
            # mistake (reasoning): squaring cos x + sin x = 1 does not give the identity.
            "Think of the unit circle. The coordinates of the point at angle $x$ add up to the "
            "radius, so $\\cos x + \\sin x = 1$, and squaring both sides gives "
            "$\\sin^2 x + \\cos^2 x = 1$.",
        ],
        [
            "That helps. So what is $\\sin 30^\\circ$? I always mix it up with $\\cos 30^\\circ$.",
        ],
        [
            "Use the 30-60-90 triangle with sides $1$, $\\sqrt{3}$ and $2$:\n\n"
            "- $\\sin 30^\\circ = \\frac{1}{2}$\n- $\\cos 30^\\circ = \\frac{\\sqrt{3}}{2}$\n\n"
            "Check: $\\left(\\frac{1}{2}\\right)^2 + \\left(\\frac{\\sqrt{3}}{2}\\right)^2 = "
            "\\frac{1}{4} + \\frac{3}{4} = 1$.",
            # mistake (factual): the values are swapped.
            "Easy to remember: $\\sin 30^\\circ = \\frac{\\sqrt{3}}{2}$ and "
            "$\\cos 30^\\circ = \\frac{1}{2}$, because the sine is always the larger one "
            "for small angles.",
        ],
        [
            "Can I use the identity to simplify $\\dfrac{1 - \\cos^2 x}{\\sin x}$?",
        ],
        [
            "Yes: $1 - \\cos^2 x = \\sin^2 x$, so\n\n"
            "$$\\frac{1 - \\cos^2 x}{\\sin x} = \\frac{\\sin^2 x}{\\sin x} = \\sin x$$\n\n"
            "as long as $\\sin x \\neq 0$.",
            # mistake (reasoning): the cancellation leaves sin x, not cos x.
            "Yes: $1 - \\cos^2 x = \\sin^2 x$, and cancelling gives "
            "$\\frac{\\sin^2 x}{\\sin x} = \\cos x$.",
        ],
        ["Got it, thank you! I'll practise a few more of these on my own. {end}"],
    ],
    "card-fraud-report": [
        [
            "Hello, I'm calling about {topic}, and I'm {temperament} about it. There are two card "
            "payments on my account I don't recognise, both to an online electronics shop at "
            "3 a.m. I still have my card.",
        ],
        [
            "I'm sorry to hear that. I've frozen your card so nothing else can go through. To "
            "verify you I only need the **last four digits** of the card and your date of birth; "
            "please never read out your full card number or PIN.",
            # mistake (security): a bank never asks for the full number and the CVV.
            "I can help. To verify you, please read me your full card number and the "
            "three-digit security code on the back.",
        ],
        ["The last four digits are 4821, born 12 March 1984. Will I get the money back?"],
        [
            "Yes. You didn't authorise these payments and you reported them promptly, so they "
            "will be refunded, usually within a few working days while we investigate. A new card "
            "is on its way and should arrive in 3 to 5 working days.",
            # mistake (factual): unauthorised card payments reported promptly are refundable.
            "Unfortunately, online payments made with your card details can't be refunded once "
            "they've been processed. I'd recommend being more careful online.",
        ],
        ["Is there anything else I should do?"],
        [
            "Check your last few statements for anything else unfamiliar, change the password of "
            "any shop account where the card was saved, and be wary of calls claiming to be from "
            "us: we will never ask for your PIN or ask you to move money.",
        ],
        ["No, that's everything. Thanks for sorting it out so quickly! {end}"],
    ],
    "gp-hypertension": [
        [
            "Hello doctor. My blood pressure was 152/95 at {topic}. Does that mean I have high "
            "blood pressure now? What worries me most is {concern}.",
        ],
        [
            "Not from one reading. I'd like you to measure it at home twice a day for a week. If "
            "your average is 135/85 or higher, that confirms hypertension and we'll plan from "
            "there.",
            # mistake (factual): a single raised reading is not enough to diagnose.
            "Yes, a single reading above 140/90 is enough to diagnose hypertension, so we'll "
            "start treatment today.",
        ],
        ["And if it is high, will I need tablets for the rest of my life?"],
        [
            "Not necessarily. Less salt, regular exercise, less alcohol and losing weight if "
            "needed can lower it by 5 to 10 mmHg. If you do need medication it is usually "
            "long-term, and you shouldn't stop it on your own just because readings look normal.",
            # mistake (factual): stopping antihypertensives without advice is unsafe.
            "Only for a while. Once your readings have been normal for a month you can simply "
            "stop the tablets yourself.",
        ],
        ["How much salt is okay in a day?"],
        [
            "Aim for less than 6 g a day, about a teaspoon, and remember most of it is already in "
            "bread, cheese, processed meat and ready meals, so check the labels.",
        ],
        ["Thank you, doctor. I'll start the home readings tomorrow. {end}"],
    ],
}

# Scenarios without a script get a conversation assembled from these, by turn: the opener asks,
# the other answers. Each turn joins one piece of each list, chosen so that no two turns of a
# dialogue are alike (the repetition check would flag them) and no piece says thanks or goodbye
# (the loop check would stop the dialogue).
GENERIC_OPENINGS = [
    "Hello {partner}, I'd like to talk about {topic}. Where should we start?",
    "{partner}, could you help me understand {topic}? I have a few questions.",
    "Hi {partner}. I've been asked to get to grips with {topic} and I'm not sure where to begin.",
]
GENERIC_ASKS = [
    [
        "Could you give me a concrete example?",
        "What would a typical case look like?",
        "How does that play out in practice?",
        "Can you walk me through one real situation?",
        "What does a good first attempt look like?",
    ],
    [
        "I'm still unsure about one part of {topic}.",
        "One thing confuses me here.",
        "I think I follow, but something bothers me.",
        "That raises another point for me.",
        "Let me check I have the order right.",
        "I tried this once and got stuck.",
    ],
    [
        "What is the most common mistake?",
        "How would I know I got it right?",
        "Which step matters most?",
        "What should I do first next time?",
        "Is there a quick check I can use?",
        "What changes when the case is unusual?",
        "How much detail is enough here?",
    ],
]
GENERIC_ANSWERS = [
    [
        "Good question, {partner}.",
        "Let's take it step by step.",
        "Here is how I see it.",
        "That's the right thing to ask about {topic}.",
        "Think of it this way.",
    ],
    [
        "Start from what you already know and write each step down before moving on.",
        "Most problems with {topic} come from skipping a step, so slow down at the tricky part.",
        "Compare the case in front of you with a simple one you have solved before.",
        "Check the assumptions first; the rest usually follows from them.",
        "Split the task into small parts and settle each one separately.",
        "Look for the detail that makes this case different from the usual one.",
    ],
    [
        "Then test your answer on a small example.",
        "If the result looks odd, go back one step.",
        "Keep a note of what you decided and why.",
        "Ask someone to check the first attempt.",
        "With practice this becomes routine.",
        "Over time you will spot the pattern quickly.",
        "That habit saves a lot of rework later.",
    ],
]
CLOSINGS = [
    [
        "That's clear now, thank you {partner}. {end}",
        "Thanks, that's all I needed for today. {end}",
        "Great, I'll practise {topic} on my own now. Thank you! {end}",
    ],
    [
        "You're welcome, {partner}. Good luck with {topic}! {end}",
        "Glad it helped. Come back with any other questions. {end}",
        "My pleasure. You're well on your way with {topic}. {end}",
    ],
]
# How many turns past min_turns an unscripted dialogue may run before it winds down.
GENERIC_EXTRA_TURNS = 8
# What the scripts say for a variable a scenario does not define (an example scenario edited
# without its variables).
VARIABLE_DEFAULTS = {"level": "stuck", "temperament": "worried", "concern": "what it means"}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _pick(variants: list[str], key: str) -> str:
    return variants[_digest(key)[0] % len(variants)]


def _approx_tokens(text: str) -> int:
    return max(1, round(len(text.split()) * 4 / 3)) if text.strip() else 0


def _int(value: object, default: int = 0) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def planned_length(script: list[list[str]] | None, key: str, min_turns: int, max_turns: int) -> int:
    """How many turns this dialogue has: its script's length, else a seeded choice, kept
    within the scenario's limits (0: no limit given)."""
    high = max_turns or (len(script) if script else max(min_turns, 4) + GENERIC_EXTRA_TURNS)
    low = min(max(min_turns, 2), high)
    if script:
        natural = len(script)
    else:
        # At least a question, an answer and a follow-up when the limits allow it.
        first = min(max(low, 4), high)
        span = min(high, first + GENERIC_EXTRA_TURNS) - first
        natural = first + int.from_bytes(_digest(key + "|length")[:4], "big") % (span + 1)
    return min(max(natural, low), high)


def _generic_turn(position: int, key: str) -> str:
    """Unscripted turn `position`: three pieces, each list cycled at its own (coprime) length,
    so two turns of one dialogue share at most two pieces."""
    if position == 0:
        return _pick(GENERIC_OPENINGS, key)
    offset = _digest(key)[1]
    parts = GENERIC_ASKS if position % 2 == 0 else GENERIC_ANSWERS
    step = position // 2
    return " ".join(part[(step + offset) % len(part)] for part in parts)


class DemoClient:
    """Offline provider. Reads `request.context`: scenario, topic, position, variant and
    end_marker, and when the engine sends them, speaker and partner (persona names),
    min_turns/max_turns, attempt (so regenerating writes something new) and the dialogue's
    scenario variables (written into the scripts' {placeholders}). A judge request (task
    "judge") is answered by the scripted judge (`demo_judge`)."""

    provider = "demo"

    def complete(self, request: ChatRequest) -> ChatResult:
        ctx = request.context
        if ctx.get("task") == "judge":
            return _result(request, scripted_judgement(ctx))
        slug = str(ctx.get("scenario", ""))
        position = _int(ctx.get("position"))
        topic = str(ctx.get("topic", "the topic"))
        partner = str(ctx.get("partner", "") or "there")
        key = f"{slug}|{topic}|{ctx.get('variant', 0)}|{ctx.get('attempt', 0)}"
        script = SCRIPTS.get(slug)
        length = planned_length(script, key, _int(ctx.get("min_turns")), _int(ctx.get("max_turns")))
        scripted = script is not None and position < len(script) - 1
        if script is not None and position == len(script) - 1 == length - 1:
            template = _pick(script[position], f"{key}|{position}")  # the script's own ending
        elif position >= length - 1:
            # The last planned turn, or past it (regenerating the last turn): wind down.
            template = _pick(CLOSINGS[position % 2], f"{key}|{position}")
        elif scripted:
            template = _pick(script[position], f"{key}|{position}")
        else:
            template = _generic_turn(position, key)
        end = str(ctx.get("end_marker", "") or "")
        text = template.replace("{topic}", topic).replace("{partner}", partner)
        chosen = ctx.get("variables") if isinstance(ctx.get("variables"), dict) else {}
        for name, value in {**VARIABLE_DEFAULTS, **chosen}.items():
            text = text.replace("{" + str(name) + "}", str(value))
        text = text.replace("{end}", end).strip()
        return _result(request, text)


def _result(request: ChatRequest, text: str) -> ChatResult:
    prompt = " ".join(m.get("content", "") for m in request.messages)
    return ChatResult(
        text=text,
        model=DEMO_MODEL,
        prompt_tokens=_approx_tokens(prompt),
        completion_tokens=_approx_tokens(text),
        finish_reason="stop",
        latency_ms=0,
    )
