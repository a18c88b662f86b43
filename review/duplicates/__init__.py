"""Near-duplicate dialogues: MinHash signatures and LSH bands stored in the database.

- `signatures`: a dialogue's text as a MinHash signature, band keys and n-gram hashes;
- `index`: checking a completed dialogue against the whole project, indexing old data.

`review/receivers.py` enqueues the check when a dialogue completes.
"""

from __future__ import annotations

from review.duplicates.index import Match, dialogue_check, index_existing, threshold

__all__ = ["Match", "dialogue_check", "index_existing", "threshold"]
