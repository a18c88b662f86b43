"""A dialogue's text as numbers: its MinHash signature, LSH band keys and n-gram hashes.

No database access here. MinHash comes from `rensa` (a Rust implementation: a dialogue's
signature costs microseconds, and its values are the same in every process, which an index
shared through the database needs). Everything else is hashed with blake2b, never Python's
`hash()`, whose value changes from one process to the next.

Shingles are word 3-grams taken inside each turn, never across two turns, so two dialogues
whose turns are the same but in another order have the same shingles.
"""

from __future__ import annotations

import re
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from zlib import crc32

from rensa import RMinHash

NUM_PERM = 128
SEED = 1
SHINGLE_WORDS = 3
# Band parameters favour recall: a false candidate costs one signature comparison, a missed
# pair is a duplicate in the training set.
FALSE_POSITIVE_WEIGHT = 0.1
FALSE_NEGATIVE_WEIGHT = 0.9
ASSISTANT = "assistant"

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def shingles(texts: Iterable[str]) -> list[str]:
    """Word 3-grams of each text (a shorter text is one shingle of its words)."""
    found: list[str] = []
    for text in texts:
        tokens = words(text)
        if len(tokens) < SHINGLE_WORDS:
            if tokens:
                found.append(" ".join(tokens))
            continue
        found.extend(
            " ".join(tokens[i : i + SHINGLE_WORDS]) for i in range(len(tokens) - SHINGLE_WORDS + 1)
        )
    return found


def minhash(texts: Iterable[str]) -> array | None:
    """The MinHash values of the texts' shingles, or None when there are no words at all."""
    found = shingles(texts)
    if not found:
        return None
    sketch = RMinHash(num_perm=NUM_PERM, seed=SEED)
    sketch.update(found)
    return array("I", sketch.digest())


def to_bytes(values: array) -> bytes:
    values = array("I", values)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def from_bytes(data: bytes | memoryview) -> array:
    values = array("I")
    values.frombytes(bytes(data))
    if sys.byteorder == "big":
        values.byteswap()
    return values


def similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """Estimated Jaccard similarity: the share of equal MinHash values."""
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def _integrate(f, low: float, high: float, steps: int = 100) -> float:
    if high <= low:
        return 0.0
    width = (high - low) / steps
    total = (f(low) + f(high)) / 2 + sum(f(low + i * width) for i in range(1, steps))
    return total * width


@lru_cache(maxsize=8)
def band_shape(threshold: float) -> tuple[int, int]:
    """(bands, rows per band) with bands * rows <= NUM_PERM that best separates pairs above
    `threshold` from pairs below it (weighted false positive and false negative areas)."""
    best: tuple[float, int, int] | None = None
    for bands in range(1, NUM_PERM + 1):
        for rows in range(1, NUM_PERM // bands + 1):

            def candidate(s: float, b: int = bands, r: int = rows) -> float:
                return 1 - (1 - s**r) ** b

            false_pos = _integrate(candidate, 0.0, threshold)
            false_neg = _integrate(lambda s, c=candidate: 1 - c(s), threshold, 1.0)
            error = FALSE_POSITIVE_WEIGHT * false_pos + FALSE_NEGATIVE_WEIGHT * false_neg
            if best is None or error < best[0]:
                best = (error, bands, rows)
    assert best is not None
    return best[1], best[2]


def band_keys(values: Sequence[int], threshold: float) -> list[int]:
    """One signed 64-bit key per band: the band's number and its values, hashed."""
    bands, rows = band_shape(threshold)
    keys = []
    for band in range(bands):
        chunk = values[band * rows : (band + 1) * rows]
        keys.append(_hash64(struct.pack(f"<H{rows}I", band, *chunk)))
    return keys


def _hash64(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little", signed=True)


@dataclass(frozen=True)
class TextFigures:
    """What the run's diversity figures need from one dialogue."""

    assistant_words: int
    assistant_bigrams: int
    opening_hash: int | None
    # Distinct assistant n-grams as (n, hash), sorted.
    ngrams: tuple[tuple[int, int], ...]

    def ngram_bytes(self) -> bytes:
        flat = array("q", [value for pair in self.ngrams for value in pair])
        if sys.byteorder == "big":
            flat.byteswap()
        return flat.tobytes()

    @staticmethod
    def ngrams_from_bytes(data: bytes | memoryview) -> list[tuple[int, int]]:
        flat = array("q")
        flat.frombytes(bytes(data))
        if sys.byteorder == "big":
            flat.byteswap()
        return list(zip(flat[::2], flat[1::2], strict=True))


def text_figures(turns: Sequence[tuple[str, str]]) -> TextFigures:
    """Figures of (side, text) turns in order: assistant unigrams and bigrams (within a turn),
    and the opening turn's normalised hash.

    N-grams are hashed with CRC-32 (about 400 per dialogue, on the path of every completion):
    in a run's vocabulary of a million bigrams about a hundred would collide, a change of
    distinct-2 in the fifth decimal.
    """
    unigrams: set[int] = set()
    bigrams: set[int] = set()
    total_words = total_bigrams = 0
    for side, text in turns:
        if side != ASSISTANT:
            continue
        tokens = words(text)
        total_words += len(tokens)
        total_bigrams += max(0, len(tokens) - 1)
        unigrams.update(map(_crc, tokens))
        bigrams.update(map(_crc, map(" ".join, zip(tokens, tokens[1:], strict=False))))
    opening = " ".join(words(turns[0][1])) if turns else ""
    return TextFigures(
        assistant_words=total_words,
        assistant_bigrams=total_bigrams,
        opening_hash=_hash64(opening.encode()) if opening else None,
        ngrams=tuple(sorted([(1, key) for key in unigrams] + [(2, key) for key in bigrams])),
    )


def _crc(text: str) -> int:
    return crc32(text.encode())
