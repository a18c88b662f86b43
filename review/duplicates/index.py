"""The near-duplicate index in the database: checking a completed dialogue, indexing old data.

A dialogue's signature, band keys and text figures are written in one transaction that
commits before it looks for twins, so of two similar dialogues checked at the same moment at
least one sees the other. The rule is the same in every order: a dialogue is a near-duplicate
when a dialogue completed before it (then: a lower id) is at least the threshold
similar; a check marks its own twin and also marks later similar dialogues that have none,
which covers a later one whose check ran first.

A regenerated dialogue is checked again: its signature and bands are replaced, it moves to
the end of the order (it completed again), and dialogues that had it as their twin are
matched again against what is now earlier than them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Coalesce

from generation.models import Dialogue, Turn
from review.models import DialogueSignature, RunNgram, SignatureBand

from . import signatures, statements

# Dialogues per transaction when indexing existing data.
BATCH_SIZE = 500
# Distinct n-grams held in memory while indexing existing data before they are written.
VOCABULARY_FLUSH = 200_000


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SIGNATURE_COLUMNS = (
    "dialogue_id", "minhash", "completed_us", "assistant_words", "assistant_bigrams",
    "opening_hash", "ngram_hashes",
)  # fmt: skip


@dataclass(frozen=True)
class Indexed:
    """One dialogue as the index knows it."""

    dialogue_id: int
    completed_us: int
    minhash: Sequence[int]
    keys: list[int]


@dataclass(frozen=True)
class Match:
    dialogue_id: int
    twin_id: int | None
    similarity: float | None


def threshold() -> float:
    return settings.SYNTHREVIEW_NEAR_DUPLICATE_THRESHOLD


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def dialogue_check(*, dialogue_id: int) -> Match | None:
    """Index one complete dialogue (again) and record its twin; None if it is not complete
    (gone, or being regenerated: its next completion checks it) or has no words.

    A check of a dialogue that is checked concurrently (a redelivered task) fails on the
    signature's primary key; the task retries it.
    """
    rows = statements.dialogue_text(dialogue_id, Dialogue.Status.COMPLETE)
    if not rows:
        return None
    run_id, finished_at, created_at = rows[0][:3]
    completed = statements.as_datetime(finished_at or created_at)
    with transaction.atomic():
        followers = _unindex(dialogue_id, run_id)
        entries = _index([(dialogue_id, run_id, completed, [row[3:] for row in rows])])
    matches = _match(entries)
    for follower in followers:
        _rematch(follower)
    return matches[0] if matches else None


def _rematch(dialogue_id: int) -> None:
    """Find again the twin of a dialogue whose twin changed its text."""
    row = (
        DialogueSignature.objects.filter(pk=dialogue_id)
        .values_list("completed_us", "minhash")
        .first()
    )
    if row is None:
        return
    DialogueSignature.objects.filter(pk=dialogue_id).update(twin=None, similarity=None)
    values = signatures.from_bytes(row[1])
    keys = signatures.band_keys(values, threshold())
    _match([Indexed(dialogue_id, row[0], values, keys)])


def _unindex(dialogue_id: int, run_id: int) -> list[int]:
    """Take an indexed dialogue out of the index (bands, signature, its run vocabulary);
    returns the dialogues whose twin it was. One statement when it was not indexed."""
    stored = statements.stored_ngrams(dialogue_id)
    if stored is None:
        return []
    removed = {(run_id, n, key): -1 for n, key in signatures.TextFigures.ngrams_from_bytes(stored)}
    _vocabulary_add(Counter(removed))
    RunNgram.objects.filter(run_id=run_id, dialogues__lte=0).delete()
    followers = list(
        DialogueSignature.objects.filter(twin_id=dialogue_id).values_list("pk", flat=True)
    )
    SignatureBand.objects.filter(dialogue_id=dialogue_id).delete()
    DialogueSignature.objects.filter(pk=dialogue_id).delete()
    return followers


def _index(
    batch: Iterable[tuple[int, int, datetime, list[tuple[str, str]]]],
    vocabulary: Counter[tuple[int, int, int]] | None = None,
) -> list[Indexed]:
    """Write signatures and bands of (dialogue, run, completed, turns), and add their n-grams
    to the runs' vocabulary: at once, or into `vocabulary` for the caller to write."""
    limit = threshold()
    entries: list[Indexed] = []
    rows: list[tuple] = []
    bands: list[tuple[int, int]] = []
    write_now = vocabulary is None
    vocabulary = Counter() if vocabulary is None else vocabulary
    for dialogue_id, run_id, completed, turns in batch:
        values = signatures.minhash(text for _, text in turns)
        if values is None:
            continue
        figures = signatures.text_figures(turns)
        keys = signatures.band_keys(values, limit)
        entries.append(Indexed(dialogue_id, micros(completed), values, keys))
        rows.append(
            (
                dialogue_id,
                signatures.to_bytes(values),
                micros(completed),
                figures.assistant_words,
                figures.assistant_bigrams,
                figures.opening_hash,
                figures.ngram_bytes(),
            )
        )
        bands += [(dialogue_id, key) for key in keys]
        for n, key in figures.ngrams:
            vocabulary[(run_id, n, key)] += 1
    statements.insert_rows(DialogueSignature, SIGNATURE_COLUMNS, rows)
    statements.insert_rows(SignatureBand, ("dialogue_id", "key"), bands)
    if write_now:
        _vocabulary_add(vocabulary)
    return entries


def _vocabulary_add(counts: Counter[tuple[int, int, int]]) -> None:
    """Add to the runs' n-gram counts. Sorted, so concurrent checks lock shared rows in one
    order and never deadlock."""
    rows = [(*key, delta) for key, delta in sorted(counts.items()) if delta]
    statements.insert_rows(RunNgram, ("run_id", "n", "key", "dialogues"), rows)


def _match(entries: list[Indexed]) -> list[Match]:
    """Record each entry's twin (the most similar earlier dialogue), and the entry as the
    twin of later similar dialogues that have none. One query, plus one UPDATE per mark."""
    if not entries:
        return []
    limit = threshold()
    by_key: dict[int, list[Indexed]] = {}
    for entry in entries:
        for key in entry.keys:
            by_key.setdefault(key, []).append(entry)
    found: dict[int, tuple[int, bytes]] = {}
    candidates: dict[int, set[int]] = {entry.dialogue_id: set() for entry in entries}
    for partner_id, key, completed_us, data in statements.partners(list(by_key)):
        found[partner_id] = (completed_us, data)
        for entry in by_key[key]:
            if partner_id != entry.dialogue_id:
                candidates[entry.dialogue_id].add(partner_id)
    results = []
    for entry in entries:
        place = (entry.completed_us, entry.dialogue_id)
        best: tuple[float, int] | None = None
        for partner_id in sorted(candidates[entry.dialogue_id]):
            completed_us, data = found[partner_id]
            score = signatures.similarity(entry.minhash, signatures.from_bytes(data))
            if score < limit:
                continue
            if (completed_us, partner_id) < place:
                if best is None or score > best[0]:
                    best = (score, partner_id)
            else:
                statements.set_twin(
                    dialogue_id=partner_id,
                    twin_id=entry.dialogue_id,
                    similarity=score,
                    only_if_none=True,
                )
        if best is not None:
            statements.set_twin(
                dialogue_id=entry.dialogue_id,
                twin_id=best[1],
                similarity=best[0],
                only_if_none=False,
            )
        results.append(Match(entry.dialogue_id, best and best[1], best and best[0]))
    return results


def index_existing(*, rebuild: bool = False, progress=None) -> int:
    """Index complete dialogues without a signature (all of them with `rebuild`, after
    emptying the index), oldest completion first. Returns how many were indexed."""
    if rebuild:
        with transaction.atomic():
            SignatureBand.objects.all().delete()
            DialogueSignature.objects.all().delete()
            RunNgram.objects.all().delete()
    pending = list(
        Dialogue.objects.filter(status=Dialogue.Status.COMPLETE, signature__isnull=True)
        .annotate(completed=_completed_at())
        .order_by("completed", "pk")
        .values_list("pk", "run_id", "completed")
    )
    done = 0
    # Common n-grams recur in most dialogues: counted across batches, each is written once
    # per VOCABULARY_FLUSH distinct n-grams instead of once per dialogue.
    vocabulary: Counter[tuple[int, int, int]] = Counter()
    for start in range(0, len(pending), BATCH_SIZE):
        batch = pending[start : start + BATCH_SIZE]
        with transaction.atomic():
            entries = _index(_with_turns(batch), vocabulary)
        _match(entries)
        if len(vocabulary) > VOCABULARY_FLUSH:
            _vocabulary_add(vocabulary)
            vocabulary.clear()
        done += len(batch)
        if progress is not None:
            progress(done, len(pending))
    _vocabulary_add(vocabulary)
    if done:
        _analyze()
    return done


def _analyze() -> None:
    """Refresh the planner's statistics after a bulk load (autovacuum would get there later):
    with stale ones PostgreSQL joins a check's candidates by scanning every signature. The
    statement is the same on SQLite."""
    with connection.cursor() as cursor:
        for model in (DialogueSignature, SignatureBand, RunNgram):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def _completed_at(prefix: str = "") -> Coalesce:
    # Dialogues written by hand (fixtures, imports) may lack finished_at.
    return Coalesce(f"{prefix}finished_at", f"{prefix}created_at")


def _with_turns(
    batch: list[tuple[int, int, datetime]],
) -> list[tuple[int, int, datetime, list[tuple[str, str]]]]:
    """The batch's dialogues with their live turns (side, text) in order: one query."""
    rows = (
        Turn.objects.filter(dialogue_id__in=[pk for pk, _, _ in batch], discarded_at__isnull=True)
        .order_by("dialogue_id", "position", "pk")
        .values_list("dialogue_id", "side", "text")
    )
    turns: dict[int, list[tuple[str, str]]] = {
        dialogue_id: [(side, text) for _, side, text in group]
        for dialogue_id, group in groupby(rows, key=itemgetter(0))
    }
    return [(pk, run_id, at, turns.get(pk, [])) for pk, run_id, at in batch]
