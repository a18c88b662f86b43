"""The offline demo provider: scripted, deterministic dialogues for the example scenarios.

It lets `make demo` show the whole loop without a model or a network. Some scripted turns carry
deliberate factual or reasoning mistakes (marked `# mistake` below) so reviewers have something
to catch. The script is indexed by turn position, so generation can resume from any point,
including right after a reviewer corrected a turn and asked for the rest to be redone.
"""

from __future__ import annotations

import hashlib

from .base import ChatRequest, ChatResult

DEMO_MODEL = "demo-scripted"

# Each entry is one turn position (even: the opening persona, odd: the other one), each a list
# of variants; the variant is picked from a hash of the topic, the dialogue and the position.
SCRIPTS: dict[str, list[list[str]]] = {
    "trig-tutoring": [
        [
            "Hi! We're doing **{topic}** in class and I'm stuck. Why is "
            "$\\sin^2 x + \\cos^2 x = 1$ always true? It looks like magic to me.",
            "Hello! Before we get to {topic}, can you explain where "
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
            "Hello, I'm calling about {topic}. There are two card payments on my account I don't "
            "recognise, both to an online electronics shop at 3 a.m. I still have my card.",
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
            "blood pressure now?",
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

GENERIC_SCRIPT: list[list[str]] = [
    ["I'd like to talk about {topic}. Where should we start?"],
    ["Let's start with the basics of {topic}: what do you already know about it?"],
    ["Only a little. Could you give me a concrete example?"],
    ["Here is one: think of a typical situation involving {topic} and what usually goes wrong."],
    ["That makes sense. What is the most common mistake people make?"],
    ["Rushing. Take {topic} one step at a time and check each step before moving on."],
    ["Thanks, that's clear now. {end}"],
]

CLOSING = ["That's all from me for now, thank you. {end}", "You're welcome, goodbye! {end}"]


def _pick(variants: list[str], key: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return variants[digest[0] % len(variants)]


def _approx_tokens(text: str) -> int:
    return max(1, round(len(text.split()) * 4 / 3)) if text.strip() else 0


class DemoClient:
    provider = "demo"

    def complete(self, request: ChatRequest) -> ChatResult:
        ctx = request.context
        slug = str(ctx.get("scenario", ""))
        position = int(ctx.get("position", 0))  # type: ignore[arg-type]
        topic = str(ctx.get("topic", "the topic"))
        script = SCRIPTS.get(slug, GENERIC_SCRIPT)
        # Past the end of the script (a reviewer regenerated from the last turn): wind down.
        variants = script[position] if position < len(script) else [CLOSING[position % 2]]
        template = _pick(variants, f"{slug}|{topic}|{ctx.get('variant', 0)}|{position}")
        end = str(ctx.get("end_marker", "") or "")
        text = template.replace("{topic}", topic).replace("{end}", end).strip()
        prompt = " ".join(m.get("content", "") for m in request.messages)
        return ChatResult(
            text=text,
            model=DEMO_MODEL,
            prompt_tokens=_approx_tokens(prompt),
            completion_tokens=_approx_tokens(text),
            finish_reason="stop",
            latency_ms=0,
        )
