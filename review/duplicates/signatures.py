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

import numpy as np
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
    return _shingles(map(words, texts))


def _shingles(token_lists: Iterable[list[str]]) -> list[str]:
    found: list[str] = []
    for tokens in token_lists:
        if len(tokens) < SHINGLE_WORDS:
            if tokens:
                found.append(" ".join(tokens))
            continue
        found.extend(map(" ".join, zip(*[tokens[i:] for i in range(SHINGLE_WORDS)], strict=False)))
    return found


def minhash(texts: Iterable[str]) -> array | None:
    """The MinHash values of the texts' shingles, or None when there are no words at all."""
    return _minhash(shingles(texts))


def _minhash(found: list[str]) -> array | None:
    if not found:
        return None
    sketch = RMinHash(num_perm=NUM_PERM, seed=SEED)
    sketch.update(found)
    return array("I", sketch.digest())


def fingerprint(turns: Sequence[tuple[str, str]]) -> tuple[array | None, TextFigures]:
    """`minhash` and the text figures of (side, text) turns in order, each turn's words read
    once (this runs for every completed dialogue)."""
    tokens = [words(text) for _, text in turns]
    return _minhash(_shingles(tokens)), _figures(turns, tokens)


def to_bytes(values: array) -> bytes:
    values = array("I", values)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """Estimated Jaccard similarity: the share of equal MinHash values."""
    return similarities(np.array([a, b], dtype=np.uint32), 0, [1])[0]


def matrix(stored: Sequence[bytes | memoryview]) -> np.ndarray:
    """Signatures as stored (`to_bytes`), one per row."""
    return np.frombuffer(b"".join(stored), dtype="<u4").reshape(len(stored), NUM_PERM)


def similarities(signatures: np.ndarray, row: int, rows: list[int]) -> list[float]:
    """`similarity` of one row of `signatures` to each of `rows`, compared all at once (a
    batch of generated text has hundreds of candidates per dialogue)."""
    equal = np.count_nonzero(signatures[rows] == signatures[row], axis=1)
    return (equal / NUM_PERM).tolist()


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


def band_keys(minhash: bytes, threshold: float) -> list[int]:
    """One signed 64-bit key per band of a signature as stored (`to_bytes`): the band's
    number (uint16) and its values (uint32), little-endian, hashed. The stored values are
    already those bytes: each band is a slice of them."""
    bands, rows = band_shape(threshold)
    width = 4 * rows
    return [
        _hash64(band.to_bytes(2, "little") + minhash[band * width : (band + 1) * width])
        for band in range(bands)
    ]


def _hash64(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little", signed=True)


@dataclass(frozen=True)
class TextFigures:
    """What the run's diversity figures need from one dialogue."""

    assistant_words: int
    assistant_bigrams: int
    opening_hash: int | None
    # Hashes of the distinct assistant n-grams, sorted.
    unigrams: list[int]
    bigrams: list[int]

    def ngram_bytes(self) -> bytes:
        """The n-grams as stored: (n, hash) pairs of little-endian int64, sorted by (n, hash)."""
        flat = [1, 0] * len(self.unigrams) + [2, 0] * len(self.bigrams)
        flat[1::2] = self.unigrams + self.bigrams
        return struct.pack(f"<{len(flat)}q", *flat)

    @staticmethod
    def ngrams_from_bytes(data: bytes | memoryview) -> list[tuple[int, int]]:
        flat = array("q")
        flat.frombytes(bytes(data))
        if sys.byteorder == "big":
            flat.byteswap()
        return list(zip(flat[::2], flat[1::2], strict=True))


def _figures(turns: Sequence[tuple[str, str]], tokens: list[list[str]]) -> TextFigures:
    """Figures of (side, text) turns in order, from each turn's words: assistant unigrams and
    bigrams (within a turn), and the opening turn's normalised hash.

    N-grams are hashed with CRC-32 (about 400 per dialogue, on the path of every completion):
    in a run's vocabulary of a million bigrams about a hundred would collide, a change of
    distinct-2 in the fifth decimal.
    """
    unigrams: set[int] = set()
    bigrams: set[int] = set()
    total_words = total_bigrams = 0
    for (side, _), words_of_turn in zip(turns, tokens, strict=True):
        if side != ASSISTANT or not words_of_turn:
            continue
        total_words += len(words_of_turn)
        total_bigrams += len(words_of_turn) - 1
        encoded = list(map(str.encode, words_of_turn))
        crcs = list(map(crc32, encoded))
        unigrams.update(crcs)
        # CRC-32 continues from a running value: crc32(b" " + second, crc32(first)) is the
        # CRC-32 of "first second", so no bigram is written out as a string.
        bigrams.update(map(crc32, map(b" ".__add__, encoded[1:]), crcs))
    opening = " ".join(tokens[0]) if tokens else ""
    return TextFigures(
        assistant_words=total_words,
        assistant_bigrams=total_bigrams,
        opening_hash=_hash64(opening.encode()) if opening else None,
        unigrams=sorted(unigrams),
        bigrams=sorted(bigrams),
    )
