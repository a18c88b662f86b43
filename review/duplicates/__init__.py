"""Near-duplicate dialogues: MinHash signatures and LSH bands stored in the database.

- `signatures`: a dialogue's text as a MinHash signature, band keys and n-gram hashes;
- `index`: checking a completed dialogue against the whole project, indexing old data;
- `receivers`: the completion signal's receiver, which enqueues the check.
"""

from __future__ import annotations

from review.duplicates.index import Match, dialogue_check, index_existing, threshold

__all__ = ["Match", "dialogue_check", "index_existing", "threshold"]
