"""A dialogue's text as numbers: its MinHash signature, LSH band keys and n-gram hashes.

No database access here. MinHash comes from `rensa` (a Rust implementation: a dialogue's
signature costs microseconds, and its values are the same in every process, which an index
shared through the database needs). Band keys and openings are hashed with blake2b, n-grams
with CRC-32, never with Python's `hash()`, whose value changes from one process to the next.

Shingles are word 3-grams taken inside each turn, never across two turns, so two dialogues
whose turns are the same but in another order have the same shingles.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from itertools import chain, repeat
from zlib import crc32

import numpy as np
from rensa import RMinHash

from . import crc

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


def fingerprints(
    dialogues: Sequence[Sequence[tuple[str, str]]],
) -> list[tuple[array | None, TextFigures]]:
    """`minhash` and the text figures of each dialogue's (side, text) turns in order, each
    turn's words read once and the n-gram hashes of all of them computed together (this runs
    for every completed dialogue, a batch at a time)."""
    tokens = [[words(text) for _, text in turns] for turns in dialogues]
    figures = _figures(dialogues, tokens)
    return [
        (_minhash(_shingles(turn_tokens)), dialogue_figures)
        for turn_tokens, dialogue_figures in zip(tokens, figures, strict=True)
    ]


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
    # Hashes of the distinct assistant n-grams, sorted (uint32).
    unigrams: np.ndarray
    bigrams: np.ndarray

    def ngram_bytes(self) -> bytes:
        """The n-grams as stored: (n, hash) pairs of little-endian int64, sorted by (n, hash)."""
        pairs = np.empty((len(self.unigrams) + len(self.bigrams), 2), dtype="<i8")
        pairs[: len(self.unigrams)] = 1
        pairs[len(self.unigrams) :] = 2
        pairs[:, 1] = np.concatenate((self.unigrams, self.bigrams))
        return pairs.tobytes()

    @staticmethod
    def ngrams_from_bytes(data: bytes | memoryview) -> np.ndarray:
        """`ngram_bytes` read back: one (n, hash) row per n-gram."""
        return np.frombuffer(data, dtype="<i8").reshape(-1, 2)


def _figures(
    dialogues: Sequence[Sequence[tuple[str, str]]], tokens: list[list[list[str]]]
) -> list[TextFigures]:
    """Figures of each dialogue's (side, text) turns, from each turn's words: assistant
    unigrams and bigrams (within a turn), and the opening turn's normalised hash.

    N-grams are hashed with CRC-32: in a run's vocabulary of a million bigrams about a
    hundred would collide, a change of distinct-2 in the fifth decimal. Each distinct word of
    the batch is hashed once, alone and after a space; a bigram's CRC-32 is combined from
    those of its words (`crc.joined`), so no bigram is written out.
    """
    said = [
        (number, turn_words)
        for number, (turns, turn_tokens) in enumerate(zip(dialogues, tokens, strict=True))
        for (side, _), turn_words in zip(turns, turn_tokens, strict=True)
        if side == ASSISTANT and turn_words
    ]
    flat = list(chain.from_iterable(turn_words for _, turn_words in said))
    alone, spaced, spaced_lengths = _word_hashes(flat)
    turn_lengths = np.array([len(turn_words) for _, turn_words in said], dtype=np.intp)
    owner = np.repeat(np.array([number for number, _ in said], dtype=np.intp), turn_lengths)
    # Every word but a turn's first makes a bigram with the word before it.
    follows = np.ones(len(flat), dtype=bool)
    follows[np.cumsum(turn_lengths) - turn_lengths] = False
    second = np.flatnonzero(follows)
    bigrams = crc.joined(alone[second - 1], spaced[second], spaced_lengths[second])
    count = len(dialogues)
    unigram_sets = _distinct_by_owner(owner, alone, count)
    bigram_sets = _distinct_by_owner(owner[second], bigrams, count)
    word_counts = np.bincount(owner, minlength=count).tolist()
    bigram_counts = np.bincount(owner[second], minlength=count).tolist()
    figures = []
    for number, turn_tokens in enumerate(tokens):
        opening = " ".join(turn_tokens[0]) if turn_tokens else ""
        figures.append(
            TextFigures(
                assistant_words=word_counts[number],
                assistant_bigrams=bigram_counts[number],
                opening_hash=_hash64(opening.encode()) if opening else None,
                unigrams=unigram_sets[number],
                bigrams=bigram_sets[number],
            )
        )
    return figures


_SPACE_CRC = crc32(b" ")


def _word_hashes(flat: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each word: the CRC-32 of its UTF-8 bytes, of a space and them, and the length of
    the latter; each distinct word hashed once."""
    slots = {word: slot for slot, word in enumerate(dict.fromkeys(flat))}
    encoded = list(map(str.encode, slots))
    alone = np.fromiter(map(crc32, encoded), np.uint32, len(encoded))
    spaced = np.fromiter(map(crc32, encoded, repeat(_SPACE_CRC)), np.uint32, len(encoded))
    spaced_lengths = np.fromiter(map(len, encoded), np.int64, len(encoded)) + 1
    slot = np.fromiter(map(slots.__getitem__, flat), np.intp, len(flat))
    return alone[slot], spaced[slot], spaced_lengths[slot]


def _distinct_by_owner(owner: np.ndarray, hashes: np.ndarray, count: int) -> list[np.ndarray]:
    """The distinct `hashes` of each owner 0..count-1, sorted: one sort for all of them
    (numpy's `sort`: `unique` costs several times more here)."""
    keys = np.sort((owner.astype(np.uint64) << np.uint64(32)) | hashes, kind="stable")
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))[: len(keys)]]
    bounds = np.searchsorted(keys >> np.uint64(32), np.arange(count + 1, dtype=np.uint64))
    values = keys.astype(np.uint32)
    return [values[bounds[i] : bounds[i + 1]] for i in range(count)]
