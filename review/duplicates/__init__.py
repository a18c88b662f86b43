"""Near-duplicate dialogues: MinHash signatures and LSH bands stored in the database.

- `signatures`: a dialogue's text as a MinHash signature, band keys and n-gram hashes;
- `crc`: the CRC-32 of two joined strings from each one's, for the n-gram hashes;
- `index`: checking a batch of completed dialogues against the whole project, indexing old
  data;
- `queue`: the pending checks, taken in batches by one task at a time.

`review/receivers.py` queues the check when a dialogue completes, `review.services.turns`
when a regeneration starts.
"""

from __future__ import annotations

from review.duplicates.index import (
    Match,
    batch_check,
    dialogue_check,
    index_existing,
    threshold,
)
from review.duplicates.queue import (
    CHECK_DELAY_SECONDS,
    check_queue,
    check_queue_reset,
    check_requeue,
    pending_check,
)

__all__ = [
    "CHECK_DELAY_SECONDS",
    "Match",
    "batch_check",
    "check_queue",
    "check_queue_reset",
    "check_requeue",
    "dialogue_check",
    "index_existing",
    "pending_check",
    "threshold",
]
