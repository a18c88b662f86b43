"""The near-duplicate index in the database: checking completed dialogues in batches.

One implementation for every caller: the check task (`queue`, through `locked_batch_check`
in the transaction where it read its pending ids), `dialogue_check` (a batch of one) and
`find_duplicates` all index through `batch_check`. Batches run one at a time
(`statements.index_lock`), so a batch reads the bands of every batch before it; the members
of a batch are compared with each other in memory, in completion order.

The rule is the same in every order: a dialogue is a near-duplicate when a dialogue completed
before it (then: a lower id) is at least the threshold similar; a check marks its own twin
(the most similar earlier dialogue) and also marks later similar dialogues that have none,
which covers a later one checked first.

A regenerated dialogue is checked again: its signature, bands and vocabulary are replaced, it
moves to the end of the order (it completed again), and dialogues that had it as their twin
are matched again against what is now earlier than them. A queued dialogue found no longer
complete (a regeneration under way, or one that never completed) is taken out of the index
the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Coalesce

from generation.models import Dialogue, Turn
from review.models import DialogueSignature, PendingDuplicateCheck, RunNgram, SignatureBand

from . import signatures, statements

# Dialogues per batch when indexing existing data.
BATCH_SIZE = 500

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SIGNATURE_COLUMNS = (
    "dialogue_id", "minhash", "completed_us", "twin_id", "similarity", "assistant_words",
    "assistant_bigrams", "opening_hash", "ngram_hashes",
)  # fmt: skip

# dialogue -> (twin, estimated similarity); a None twin clears the mark.
Marks = dict[int, tuple[int | None, float | None]]


@dataclass(frozen=True)
class Indexed:
    """One dialogue as the index knows it."""

    dialogue_id: int
    completed_us: int
    minhash: bytes  # as stored (`signatures.to_bytes`)
    keys: list[int]

    @property
    def place(self) -> tuple[int, int]:
        return (self.completed_us, self.dialogue_id)


@dataclass(frozen=True)
class Match:
    dialogue_id: int
    twin_id: int | None
    similarity: float | None


class Vocabulary:
    """A batch's change to its runs' n-gram counts (how many dialogues of the run hold each
    n-gram): each dialogue's distinct n-grams added, or taken back when it is indexed again."""

    def __init__(self) -> None:
        self._parts: defaultdict[tuple[int, int], list[tuple[np.ndarray, int]]] = defaultdict(list)

    def add(self, run_id: int, n: int, hashes: np.ndarray, *, sign: int = 1) -> None:
        self._parts[run_id, n].append((hashes, sign))

    def changes(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """(run, n, n-gram hashes, change of each) per (run, n); unchanged n-grams left out."""
        for (run_id, n), parts in self._parts.items():
            hashes = np.concatenate([part for part, _ in parts])
            signs = np.concatenate([np.full(len(part), sign) for part, sign in parts])
            keys, where = np.unique(hashes, return_inverse=True)
            change = np.bincount(where, weights=signs, minlength=len(keys)).astype(np.int64)
            changed = change != 0
            yield run_id, n, keys[changed], change[changed]


def threshold() -> float:
    return settings.SYNTHREVIEW_NEAR_DUPLICATE_THRESHOLD


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def dialogue_check(*, dialogue_id: int) -> Match | None:
    """Index one complete dialogue (again) and record its twin; None if it is not complete
    (gone, or being regenerated: its next completion checks it) or has no words."""
    matches = batch_check(dialogue_ids=[dialogue_id])
    return matches[0] if matches else None


def batch_check(*, dialogue_ids: Sequence[int]) -> list[Match]:
    """Index these dialogues (again) in one transaction and record their twins, in completion
    order; the ones not complete (a regeneration under way or interrupted) or without words
    are left out, and out of the index if they were in it. Their pending rows go."""
    with transaction.atomic():
        statements.index_lock()
        return locked_batch_check(dialogue_ids=dialogue_ids)


def locked_batch_check(*, dialogue_ids: Sequence[int]) -> list[Match]:
    """`batch_check` inside a transaction that already holds the index lock (the check
    task's, which read the pending ids under it)."""
    texts = _texts(dialogue_ids)
    vocabulary = Vocabulary()
    followers = _unindex(dialogue_ids, vocabulary)
    entries, rows = _signature_rows(texts, vocabulary)
    marks, later = _twins(entries)
    statements.signatures_insert(
        SIGNATURE_COLUMNS,
        [(row[0], row[1], row[2], *marks.get(row[0], (None, None)), *row[3:]) for row in rows],
    )
    statements.bands_insert((entry.dialogue_id, key) for entry in entries for key in entry.keys)
    _mark(later, only_if_none=True)
    _vocabulary_add(vocabulary)
    _rematch(followers - {entry.dialogue_id for entry in entries})
    PendingDuplicateCheck.objects.filter(dialogue_id__in=dialogue_ids).delete()
    return [
        Match(entry.dialogue_id, *marks.get(entry.dialogue_id, (None, None))) for entry in entries
    ]


Text = tuple[int, int, int, list[tuple[str, str]]]  # dialogue, run, completed_us, (side, text)


def _texts(dialogue_ids: Sequence[int]) -> list[Text]:
    """The complete dialogues among `dialogue_ids` with their live turns, in completion order:
    two queries (the dialogues, then their turns: a dialogue's run and completion read once,
    not with each of its turns)."""
    dialogues = sorted(
        (micros(completed), dialogue_id, run_id)
        for dialogue_id, run_id, completed in Dialogue.objects.filter(
            pk__in=list(dialogue_ids), status=Dialogue.Status.COMPLETE
        )
        .annotate(completed=completed_at())
        .values_list("pk", "run_id", "completed")
    )
    if not dialogues:
        return []
    rows = (
        Turn.objects.filter(
            dialogue_id__in=[dialogue_id for _, dialogue_id, _ in dialogues],
            discarded_at__isnull=True,
        )
        .order_by("dialogue_id", "position", "pk")
        .values_list("dialogue_id", "side", "text")
    )
    turns = {
        dialogue_id: [row[1:] for row in group]
        for dialogue_id, group in groupby(rows, key=itemgetter(0))
    }
    return [
        (dialogue_id, run_id, completed_us, turns[dialogue_id])
        for completed_us, dialogue_id, run_id in dialogues
        if dialogue_id in turns
    ]


def _unindex(dialogue_ids: Sequence[int], vocabulary: Vocabulary) -> set[int]:
    """Take the indexed ones among these dialogues out of the index (bands, signature), their
    n-grams out of `vocabulary`; returns the other dialogues whose twin one of them was."""
    stored = list(
        DialogueSignature.objects.filter(pk__in=list(dialogue_ids)).values_list(
            "pk", "dialogue__run_id", "ngram_hashes"
        )
    )
    if not stored:
        return set()
    for _, run_id, data in stored:
        pairs = signatures.TextFigures.ngrams_from_bytes(data)
        for n in (1, 2):
            vocabulary.add(run_id, n, pairs[pairs[:, 0] == n, 1], sign=-1)
    ids = [dialogue_id for dialogue_id, _, _ in stored]
    followers = set(
        DialogueSignature.objects.filter(twin_id__in=ids)
        .exclude(pk__in=ids)
        .values_list("pk", flat=True)
    )
    SignatureBand.objects.filter(dialogue_id__in=ids).delete()
    DialogueSignature.objects.filter(pk__in=ids).delete()
    return followers


def _signature_rows(texts: list[Text], vocabulary: Vocabulary) -> tuple[list[Indexed], list]:
    """Signatures, band keys and signature rows (without the mark) of the dialogues with
    words; their n-grams counted into `vocabulary`."""
    limit = threshold()
    entries: list[Indexed] = []
    rows: list[tuple] = []
    fingerprints = signatures.fingerprints([turns for *_, turns in texts])
    for (dialogue_id, run_id, completed_us, _), (values, figures) in zip(
        texts, fingerprints, strict=True
    ):
        if values is None:
            continue
        minhash = signatures.to_bytes(values)
        entries.append(
            Indexed(dialogue_id, completed_us, minhash, signatures.band_keys(minhash, limit))
        )
        rows.append(
            (
                dialogue_id,
                minhash,
                completed_us,
                figures.assistant_words,
                figures.assistant_bigrams,
                figures.opening_hash,
                figures.ngram_bytes(),
            )
        )
        vocabulary.add(run_id, 1, figures.unigrams)
        vocabulary.add(run_id, 2, figures.bigrams)
    return entries, rows


def _twins(entries: list[Indexed]) -> tuple[Marks, Marks]:
    """(each entry's twin: the most similar dialogue completed before it, indexed or among the
    entries; indexed later dialogues that get an entry as their twin if they have none).
    One query for every entry's band keys; the entries' own rows are not read from the index
    but compared with each other here."""
    limit = threshold()
    by_key: dict[int, list[Indexed]] = {}
    for entry in entries:
        for key in entry.keys:
            by_key.setdefault(key, []).append(entry)
    known = {entry.dialogue_id: entry for entry in entries}
    candidates: dict[int, set[int]] = {entry.dialogue_id: set() for entry in entries}
    for members in by_key.values():
        if len(members) > 1:  # a key of one entry pairs it with nothing
            for member in members:
                candidates[member.dialogue_id].update(m.dialogue_id for m in members)
    for partner_id, key, completed_us, data in statements.partners(by_key):
        if partner_id in candidates:
            continue  # an entry already indexed (matched again): compared above
        if partner_id not in known:
            known[partner_id] = Indexed(partner_id, completed_us, data, [])
        for entry in by_key[key]:
            candidates[entry.dialogue_id].add(partner_id)
    row = {dialogue_id: i for i, dialogue_id in enumerate(known)}
    matrix = signatures.matrix([indexed.minhash for indexed in known.values()])
    marks: Marks = {}
    later: Marks = {}
    for entry in sorted(entries, key=lambda e: e.place):
        best: tuple[float, int] | None = None
        partner_ids = sorted(candidates[entry.dialogue_id] - {entry.dialogue_id})
        if not partner_ids:
            continue
        scores = signatures.similarities(
            matrix, row[entry.dialogue_id], [row[partner_id] for partner_id in partner_ids]
        )
        for partner_id, score in zip(partner_ids, scores, strict=True):
            partner = known[partner_id]
            if score < limit:
                continue
            if partner.place < entry.place:
                if best is None or score > best[0]:
                    best = (score, partner_id)
            elif partner_id not in candidates and partner_id not in later:
                later[partner_id] = (entry.dialogue_id, score)
        if best is not None:
            marks[entry.dialogue_id] = (best[1], best[0])
    return marks, later


def _mark(marks: Marks, *, only_if_none: bool) -> None:
    for dialogue_id, (twin_id, similarity) in sorted(marks.items()):
        statements.set_twin(
            dialogue_id=dialogue_id,
            twin_id=twin_id,
            similarity=similarity,
            only_if_none=only_if_none,
        )


def _rematch(dialogue_ids: set[int]) -> None:
    """Find again the twins of indexed dialogues whose twin changed its text."""
    if not dialogue_ids:
        return
    limit = threshold()
    entries = []
    for pk, completed_us, data in DialogueSignature.objects.filter(pk__in=dialogue_ids).values_list(
        "pk", "completed_us", "minhash"
    ):
        minhash = bytes(data)
        entries.append(Indexed(pk, completed_us, minhash, signatures.band_keys(minhash, limit)))
    marks, later = _twins(entries)
    _mark(
        {e.dialogue_id: marks.get(e.dialogue_id, (None, None)) for e in entries}, only_if_none=False
    )
    _mark(later, only_if_none=True)


def _vocabulary_add(vocabulary: Vocabulary) -> None:
    """Add to the runs' n-gram counts: one row per distinct n-gram of the batch."""
    changes = list(vocabulary.changes())
    statements.ngrams_add(
        (run_id, n, np.column_stack((hashes, change)).ravel().tolist())
        for run_id, n, hashes, change in changes
    )
    runs = {run_id for run_id, _, _, change in changes if change.min(initial=0) < 0}
    if runs:
        RunNgram.objects.filter(run_id__in=runs, dialogues__lte=0).delete()


def index_existing(*, rebuild: bool = False, progress=None) -> int:
    """Index complete dialogues without a signature (all of them with `rebuild`, after
    emptying the index), oldest completion first, BATCH_SIZE at a time through the check's
    own `batch_check`. Returns how many were indexed."""
    if rebuild:
        with transaction.atomic():
            statements.index_lock()
            SignatureBand.objects.all().delete()
            DialogueSignature.objects.all().delete()
            RunNgram.objects.all().delete()
    pending = list(
        Dialogue.objects.filter(status=Dialogue.Status.COMPLETE, signature__isnull=True)
        .annotate(completed=completed_at())
        .order_by("completed", "pk")
        .values_list("pk", flat=True)
    )
    for start in range(0, len(pending), BATCH_SIZE):
        batch_check(dialogue_ids=pending[start : start + BATCH_SIZE])
        if progress is not None:
            progress(min(start + BATCH_SIZE, len(pending)), len(pending))
    if pending:
        _analyze()
    return len(pending)


def _analyze() -> None:
    """Refresh the planner's statistics after a bulk load (autovacuum would get there later):
    with stale ones PostgreSQL joins a check's candidates by scanning every signature. The
    statement is the same on SQLite."""
    with connection.cursor() as cursor:
        for model in (DialogueSignature, SignatureBand, RunNgram):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def completed_at(prefix: str = "") -> Coalesce:
    # Dialogues written by hand (fixtures, imports) may lack finished_at.
    return Coalesce(f"{prefix}finished_at", f"{prefix}created_at")
