"""CRC-32 of two joined byte strings from the CRC-32 of each, for many pairs at once (numpy).

`zlib.crc32(a + b) == advance(crc32(a), len(b)) ^ crc32(b)`, where `advance(c, n)` runs the
CRC register over n zero bytes without its initial and final inversion (zlib's
`crc32_combine`): a linear map of c's 32 bits. Applied as byte tables (four lookups per
value), one table per power of two, composed by the bits of n, it hashes every word pair of
a batch of dialogues without writing any pair out.
"""

from __future__ import annotations

from functools import cache
from zlib import crc32

import numpy as np

_BITS = 32


def joined(first: np.ndarray, second: np.ndarray, second_lengths: np.ndarray) -> np.ndarray:
    """crc32(a + b) of each pair, from crc32(a) (`first`), crc32(b) (`second`) and len(b)
    in bytes, as uint32 arrays of equal length."""
    return advance(first, second_lengths) ^ second


def advance(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each CRC value run over its length of zero bytes (the linear part only)."""
    values = values.astype(np.uint32)
    lengths = np.asarray(lengths, dtype=np.int64)
    top = int(lengths.max(initial=0)).bit_length()
    for power in range(top):
        chosen = np.flatnonzero(lengths & (1 << power))
        if chosen.size:
            values[chosen] = _apply(_tables()[power], values[chosen])
    return values


def _apply(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    return (
        table[0, values & 0xFF]
        ^ table[1, (values >> 8) & 0xFF]
        ^ table[2, (values >> 16) & 0xFF]
        ^ table[3, values >> 24]
    )


@cache
def _tables() -> list[np.ndarray]:
    """Advancing by 2**k bytes for every k < 32 (any length of a word), as four 256-entry
    tables each (one per byte of the value); built on first use, not at every import."""
    columns = np.array(
        [crc32(b"\0", 1 << bit) ^ crc32(b"\0", 0) for bit in range(_BITS)], dtype=np.uint32
    )
    tables = [_byte_tables(columns)]
    while len(tables) < _BITS:
        # Advancing by 2**(k+1) bytes is advancing by 2**k twice: square the last map.
        tables.append(_byte_tables(_apply(tables[-1], _apply(tables[-1], _unit_columns()))))
    return tables


def _unit_columns() -> np.ndarray:
    return np.left_shift(np.uint32(1), np.arange(_BITS, dtype=np.uint32))


def _byte_tables(columns: np.ndarray) -> np.ndarray:
    """(4, 256) tables of a linear map given by its 32 columns (the images of each bit):
    entry [i, b] is the image of byte value b at byte position i, the xor of the columns of
    b's set bits."""
    bits = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)
    images = np.where(bits[None, :, :], columns.reshape(4, 1, 8), np.uint32(0))
    return np.bitwise_xor.reduce(images, axis=2)
