"""The near-duplicate index in the database: checking a completed dialogue, indexing old data.

A dialogue's signature, band keys and text figures are written in one transaction that
commits before it looks for twins, so of two similar dialogues checked at the same moment at
least one sees the other. The rule is the same in every order: a dialogue is a near-duplicate
when a dialogue completed before it (`completed_at`, then id) is at least the threshold
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
from datetime import datetime
from itertools import groupby
from operator import itemgetter

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Coalesce

from generation.models import Dialogue, Turn
from review.models import DialogueSignature, RunNgram, SignatureBand

from . import signatures

# Dialogues per transaction when indexing existing data.
BATCH_SIZE = 500
# Rows per INSERT of the run vocabulary (4 parameters each; SQLite allows 32766).
UPSERT_ROWS = 2000


@dataclass(frozen=True)
class Indexed:
    """One dialogue as the index knows it."""

    dialogue_id: int
    run_id: int
    completed_at: datetime
    minhash: Sequence[int]
    keys: list[int]


@dataclass(frozen=True)
class Match:
    dialogue_id: int
    twin_id: int | None
    similarity: float | None


def threshold() -> float:
    return settings.SYNTHREVIEW_NEAR_DUPLICATE_THRESHOLD


def dialogue_check(*, dialogue_id: int) -> Match | None:
    """Index one complete dialogue (again) and record its twin; None if it is not complete
    (gone, or being regenerated: its next completion checks it) or has no words."""
    row = (
        Dialogue.objects.filter(pk=dialogue_id, status=Dialogue.Status.COMPLETE)
        .values_list("run_id", _completed_at())
        .first()
    )
    if row is None:
        return None
    turns = list(
        Turn.objects.filter(dialogue_id=dialogue_id, discarded_at__isnull=True)
        .order_by("position", "pk")
        .values_list("side", "text")
    )
    with transaction.atomic():
        # One check of a dialogue at a time (a redelivered task, a regeneration).
        Dialogue.objects.select_for_update().filter(pk=dialogue_id).values_list("pk").first()
        followers = _unindex([dialogue_id])
        entry = _index([(dialogue_id, row[0], row[1], turns)])
    matches = _match(entry)
    for follower in followers:
        _rematch(follower)
    return matches[0] if matches else None


def _rematch(dialogue_id: int) -> None:
    """Find again the twin of a dialogue whose twin changed its text."""
    row = (
        DialogueSignature.objects.filter(pk=dialogue_id)
        .values_list("dialogue__run_id", "completed_at", "minhash")
        .first()
    )
    if row is None:
        return
    DialogueSignature.objects.filter(pk=dialogue_id).update(twin=None, similarity=None)
    values = signatures.from_bytes(row[2])
    keys = signatures.band_keys(values, threshold())
    _match([Indexed(dialogue_id, row[0], row[1], values, keys)])


def _unindex(dialogue_ids: list[int]) -> list[int]:
    """Take the dialogues out of the index (bands, signature, their run vocabulary); returns
    the dialogues whose twin one of them was."""
    old = list(
        DialogueSignature.objects.filter(pk__in=dialogue_ids).values_list(
            "dialogue_id", "dialogue__run_id", "ngram_hashes"
        )
    )
    if not old:
        return []
    removed: Counter[tuple[int, int, int]] = Counter()
    for _, run_id, data in old:
        for n, key in signatures.TextFigures.ngrams_from_bytes(data):
            removed[(run_id, n, key)] -= 1
    _vocabulary_add(removed)
    RunNgram.objects.filter(run_id__in={run_id for _, run_id, _ in old}, dialogues__lte=0).delete()
    followers = list(
        DialogueSignature.objects.filter(twin_id__in=dialogue_ids)
        .exclude(pk__in=dialogue_ids)
        .values_list("pk", flat=True)
    )
    SignatureBand.objects.filter(dialogue_id__in=dialogue_ids).delete()
    DialogueSignature.objects.filter(pk__in=dialogue_ids).delete()
    return followers


def _index(batch: Iterable[tuple[int, int, datetime, list[tuple[str, str]]]]) -> list[Indexed]:
    """Write signatures, bands and run vocabulary of (dialogue, run, completed_at, turns)."""
    limit = threshold()
    entries: list[Indexed] = []
    rows: list[DialogueSignature] = []
    bands: list[SignatureBand] = []
    vocabulary: Counter[tuple[int, int, int]] = Counter()
    for dialogue_id, run_id, completed_at, turns in batch:
        values = signatures.minhash(text for _, text in turns)
        if values is None:
            continue
        figures = signatures.text_figures(turns)
        keys = signatures.band_keys(values, limit)
        entries.append(Indexed(dialogue_id, run_id, completed_at, values, keys))
        rows.append(
            DialogueSignature(
                dialogue_id=dialogue_id,
                minhash=signatures.to_bytes(values),
                completed_at=completed_at,
                assistant_words=figures.assistant_words,
                assistant_bigrams=figures.assistant_bigrams,
                opening_hash=figures.opening_hash,
                ngram_hashes=figures.ngram_bytes(),
            )
        )
        bands += [SignatureBand(dialogue_id=dialogue_id, key=key) for key in keys]
        for n, key in figures.ngrams:
            vocabulary[(run_id, n, key)] += 1
    DialogueSignature.objects.bulk_create(rows)
    SignatureBand.objects.bulk_create(bands)
    _vocabulary_add(vocabulary)
    return entries


def _vocabulary_add(counts: Counter[tuple[int, int, int]]) -> None:
    """Add to the runs' n-gram counts in one statement per UPSERT_ROWS rows.

    Sorted, so concurrent checks lock shared rows in one order and never deadlock. The
    statement is the same on PostgreSQL and SQLite (INSERT ... ON CONFLICT DO UPDATE).
    """
    items = sorted((key, delta) for key, delta in counts.items() if delta)
    if not items:
        return
    table = connection.ops.quote_name(RunNgram._meta.db_table)
    key = connection.ops.quote_name("key")
    with connection.cursor() as cursor:
        for start in range(0, len(items), UPSERT_ROWS):
            chunk = items[start : start + UPSERT_ROWS]
            values = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
            params = [value for (run_id, n, k), delta in chunk for value in (run_id, n, k, delta)]
            cursor.execute(
                f"INSERT INTO {table} (run_id, n, {key}, dialogues) VALUES {values} "
                f"ON CONFLICT (run_id, n, {key}) DO UPDATE "
                f"SET dialogues = {table}.dialogues + excluded.dialogues",
                params,
            )


def _match(entries: list[Indexed]) -> list[Match]:
    """Record each entry's twin (the most similar earlier dialogue), and the entry as the
    twin of later similar dialogues that have none. Two queries, plus one UPDATE per change."""
    if not entries:
        return []
    limit = threshold()
    by_key: dict[int, list[Indexed]] = {}
    for entry in entries:
        for key in entry.keys:
            by_key.setdefault(key, []).append(entry)
    partners = dict(
        (dialogue_id, (completed_at, signatures.from_bytes(data)))
        for dialogue_id, completed_at, data in DialogueSignature.objects.filter(
            pk__in=SignatureBand.objects.filter(key__in=list(by_key)).values("dialogue_id")
        ).values_list("dialogue_id", "completed_at", "minhash")
    )
    candidates: dict[int, set[int]] = {entry.dialogue_id: set() for entry in entries}
    for partner_id, key in SignatureBand.objects.filter(
        key__in=list(by_key), dialogue_id__in=list(partners)
    ).values_list("dialogue_id", "key"):
        for entry in by_key[key]:
            if partner_id != entry.dialogue_id:
                candidates[entry.dialogue_id].add(partner_id)
    results = []
    for entry in entries:
        place = (entry.completed_at, entry.dialogue_id)
        best: tuple[float, int] | None = None
        for partner_id in sorted(candidates[entry.dialogue_id]):
            completed_at, values = partners[partner_id]
            score = signatures.similarity(entry.minhash, values)
            if score < limit:
                continue
            if (completed_at, partner_id) < place:
                if best is None or score > best[0]:
                    best = (score, partner_id)
            else:
                DialogueSignature.objects.filter(pk=partner_id, twin__isnull=True).update(
                    twin_id=entry.dialogue_id, similarity=score
                )
        if best is not None:
            DialogueSignature.objects.filter(pk=entry.dialogue_id).update(
                twin_id=best[1], similarity=best[0]
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
    for start in range(0, len(pending), BATCH_SIZE):
        batch = pending[start : start + BATCH_SIZE]
        with transaction.atomic():
            entries = _index(_with_turns(batch))
        _match(entries)
        done += len(batch)
        if progress is not None:
            progress(done, len(pending))
    return done


def _completed_at() -> Coalesce:
    # Dialogues written by hand (fixtures, imports) may lack finished_at.
    return Coalesce("finished_at", "created_at")


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
