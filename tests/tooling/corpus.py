"""Generated dialogue texts with known near-duplicates, for tests and the benchmark.

Originals are written from a topic's vocabulary and a general one, with numbers in them, so
unrelated dialogues on one topic share many words (but few word triples). Copies of an
original come in three kinds: exact, one number changed, two turns swapped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

GENERAL = [
    f"{a}{b}"
    for a in ("ba", "ce", "di", "fo", "gu", "ha", "ki", "lo", "mu", "ne", "pa", "ri")
    for b in ("t", "n", "rk", "sh", "ll", "mp", "ve", "ck", "th", "ng", "ss", "x")
]
COPY_KINDS = ("exact", "number", "swap")


@dataclass(frozen=True)
class Sample:
    """Turn texts, and for a copy the index of the original it copies."""

    turns: list[str]
    copy_of: int | None = None
    kind: str = "original"


def _turn(rng: random.Random, topic_words: list[str], words: int) -> str:
    out = []
    for _ in range(words):
        roll = rng.random()
        if roll < 0.08:
            out.append(str(rng.randrange(10, 1000)))
        elif roll < 0.55:
            out.append(rng.choice(topic_words))
        else:
            out.append(rng.choice(GENERAL))
    return " ".join(out) + "."


def original(rng: random.Random, topic: int, turns: int = 10) -> list[str]:
    topic_words = [f"{topic}{word}" for word in GENERAL[:40]]
    return [_turn(rng, topic_words, rng.randrange(25, 60)) for _ in range(turns)]


def copy(rng: random.Random, turns: list[str], kind: str) -> list[str]:
    copied = list(turns)
    if kind == "number":
        for index in rng.sample(range(len(copied)), len(copied)):
            words = copied[index].split(" ")
            numbers = [i for i, word in enumerate(words) if word.isdigit()]
            if numbers:
                at = rng.choice(numbers)
                words[at] = str(int(words[at]) + 1)
                copied[index] = " ".join(words)
                break
    elif kind == "swap":
        a, b = rng.sample(range(len(copied)), 2)
        copied[a], copied[b] = copied[b], copied[a]
    return copied


def corpus(
    *, originals: int, copies: int, topics: int = 5, turns: int = 10, seed: int = 0
) -> list[Sample]:
    """`originals` unrelated dialogues (over `topics` topics), then `copies` copies of random
    originals, cycling through the copy kinds; in the order they complete."""
    rng = random.Random(seed)
    samples = [Sample(original(rng, i % topics, turns)) for i in range(originals)]
    for i in range(copies):
        source = rng.randrange(originals)
        kind = COPY_KINDS[i % len(COPY_KINDS)]
        samples.append(Sample(copy(rng, samples[source].turns, kind), source, kind))
    return samples
