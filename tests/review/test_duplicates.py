"""Near-duplicates: signatures, the database index, recall and precision on a known corpus,
regeneration, the completion signal and the command."""

from __future__ import annotations

import contextlib
import io
import random
import struct
import threading
import time
from datetime import timedelta
from hashlib import blake2b
from unittest import mock
from zlib import crc32

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from generation.models import Dialogue, Side, Turn
from generation.signals import dialogue_completed
from review import duplicates
from review.duplicates import crc, queue, signatures, statements
from review.models import DialogueSignature, PendingDuplicateCheck, RunNgram, SignatureBand
from review.tasks import check_near_duplicates
from tests.factories import RunFactory
from tests.tooling.corpus import corpus

pytestmark = pytest.mark.django_db

START = timezone.now() - timedelta(days=1)


def _dialogue(run, index: int, texts: list[str]) -> Dialogue:
    dialogue = Dialogue.objects.create(
        run=run,
        scenario=run.scenario,
        index=index,
        topic="t",
        status=Dialogue.Status.COMPLETE,
        finished_at=START + timedelta(seconds=index),
    )
    personas = {p.position: p for p in run.scenario.personas.all()}
    Turn.objects.bulk_create(
        Turn(
            dialogue=dialogue,
            position=i,
            persona=personas[i % 2],
            side=personas[i % 2].side,
            original_text=text,
            text=text,
        )
        for i, text in enumerate(texts)
    )
    return dialogue


def test_shingles_stay_inside_a_turn_and_ignore_case_and_punctuation():
    assert signatures.shingles(["One two, THREE four", "five six"]) == [
        "one two three",
        "two three four",
        "five six",
    ]
    assert signatures.minhash(["", "  ...  "]) is None


def test_swapped_turns_have_the_same_signature_and_a_changed_word_a_close_one():
    turns = [f"turn {i} has words alpha beta gamma delta {i * 7}" for i in range(6)]
    swapped = [turns[1], turns[0], *turns[2:]]
    changed = [*turns[:5], turns[5].replace("35", "36")]
    base = signatures.minhash(turns)
    assert signatures.similarity(base, signatures.minhash(swapped)) == 1.0
    assert 0.7 < signatures.similarity(base, signatures.minhash(changed)) < 1.0


def test_band_shape_fits_the_signature_and_rises_around_the_threshold():
    bands, rows = signatures.band_shape(0.8)
    assert bands * rows <= signatures.NUM_PERM
    chance = [1 - (1 - s**rows) ** bands for s in (0.5, 0.8, 0.9)]
    assert chance[0] < 0.1 < 0.8 < chance[1] < chance[2]


def test_stored_hashes_are_those_of_the_joined_ngrams_and_the_packed_bands():
    """An index written earlier stays valid: an n-gram's hash is the CRC-32 of its words
    joined by a space (UTF-8), a band's key hashes the band's number and values packed
    little-endian."""
    turns = [
        (Side.USER, "Ça va? Très bien"),
        (Side.ASSISTANT, "Grüße aus Köln: 東京 タワー, naïve café"),
        (Side.ASSISTANT, "ok"),
    ]
    [(values, figures)] = signatures.fingerprints([turns])
    said = ["grüße", "aus", "köln", "東京", "タワー", "naïve", "café"]
    ngrams = [(1, crc32(word.encode())) for word in {*said, "ok"}]
    ngrams += [(2, crc32(f"{a} {b}".encode())) for a, b in zip(said, said[1:], strict=False)]
    stored = signatures.TextFigures.ngrams_from_bytes(figures.ngram_bytes())
    assert list(map(tuple, stored.tolist())) == sorted(ngrams)
    assert (figures.assistant_words, figures.assistant_bigrams) == (8, 6)
    bands, rows = signatures.band_shape(0.8)
    packed = [
        struct.pack(f"<H{rows}I", band, *values[band * rows : (band + 1) * rows])
        for band in range(bands)
    ]
    assert signatures.band_keys(signatures.to_bytes(values), 0.8) == [
        int.from_bytes(blake2b(data, digest_size=8).digest(), "little", signed=True)
        for data in packed
    ]


def _ngrams(turns) -> list[tuple[int, int]]:
    """A dialogue's assistant n-grams as stored, written out the long way."""
    found = set()
    for side, text in turns:
        said = signatures.words(text) if side == Side.ASSISTANT else []
        found |= {(1, crc32(word.encode())) for word in said}
        found |= {(2, crc32(f"{a} {b}".encode())) for a, b in zip(said, said[1:], strict=False)}
    return sorted(found)


def test_a_batch_hashes_each_dialogue_as_it_would_alone():
    """The n-grams of a batch are hashed together: none crosses from one dialogue or turn
    into the next, and a word of any length or script is hashed like its bigrams."""
    long_word = "x" * 5000
    dialogues = [
        [(Side.USER, "hello there"), (Side.ASSISTANT, "one two three"), (Side.ASSISTANT, "four")],
        [],
        [(Side.USER, "only the user speaks")],
        [(Side.ASSISTANT, "... !!")],
        [(Side.ASSISTANT, f"naïve {long_word} café 東京"), (Side.ASSISTANT, "two three one")],
        [(Side.ASSISTANT, "one two three four one two")],
    ]
    batch = signatures.fingerprints(dialogues)
    for turns, (values, figures) in zip(dialogues, batch, strict=True):
        [(alone_values, alone_figures)] = signatures.fingerprints([turns])
        assert values == alone_values
        assert alone_figures.ngram_bytes() == figures.ngram_bytes()
        stored = signatures.TextFigures.ngrams_from_bytes(figures.ngram_bytes())
        assert list(map(tuple, stored.tolist())) == _ngrams(turns)
    assert [(f.assistant_words, f.assistant_bigrams) for _, f in batch] == [
        (4, 2), (0, 0), (0, 0), (0, 0), (7, 5), (6, 5),
    ]  # fmt: skip


def test_joined_crcs_are_those_of_the_joined_bytes():
    rng = random.Random(7)
    firsts = [rng.randbytes(rng.randrange(0, 40)) for _ in range(300)]
    seconds = [rng.randbytes(rng.choice([0, 1, 2, 7, 64, 1000, 70_000])) for _ in range(300)]
    joined = crc.joined(
        np.array([crc32(first) for first in firsts], dtype=np.uint32),
        np.array([crc32(second) for second in seconds], dtype=np.uint32),
        np.array([len(second) for second in seconds]),
    )
    assert joined.tolist() == [crc32(a + b) for a, b in zip(firsts, seconds, strict=True)]


def _corpus_run(samples) -> list[Dialogue]:
    run = RunFactory()
    return [_dialogue(run, i, sample.turns) for i, sample in enumerate(samples)]


def _scores(samples, dialogues) -> tuple[float, float, int]:
    """(recall, precision, twins pointing at the copied original) from the stored marks."""
    twins = dict(DialogueSignature.objects.values_list("dialogue_id", "twin_id"))
    marked = {d.pk for d in dialogues if twins.get(d.pk)}
    copies = {d.pk for d, s in zip(dialogues, samples, strict=True) if s.copy_of is not None}
    right_twin = sum(
        1
        for d, s in zip(dialogues, samples, strict=True)
        if s.copy_of is not None and twins.get(d.pk) == dialogues[s.copy_of].pk
    )
    recall = len(marked & copies) / len(copies)
    precision = len(marked & copies) / len(marked) if marked else 1.0
    return recall, precision, right_twin


def test_recall_and_precision_on_a_corpus_with_known_copies():
    """60 unrelated dialogues on 3 topics, then 30 copies: exact, a number changed, two turns
    swapped. Checked one by one as they complete, every copy is found with its original as
    the twin and no original is marked."""
    samples = corpus(originals=60, copies=30, topics=3, seed=7)
    dialogues = _corpus_run(samples)
    for dialogue in dialogues:
        duplicates.dialogue_check(dialogue_id=dialogue.pk)
    assert _scores(samples, dialogues) == (1.0, 1.0, 30)


def test_checks_in_any_order_and_the_rebuild_mark_the_same_dialogues():
    """Checked newest first, each copy still ends up marked, with an earlier twin (another
    copy of its original, if that was checked before the original); the rebuild marks the
    same dialogues, each with its most similar earlier one."""
    samples = corpus(originals=30, copies=15, topics=3, seed=3)
    dialogues = _corpus_run(samples)
    for dialogue in reversed(dialogues):
        duplicates.dialogue_check(dialogue_id=dialogue.pk)
    checked = dict(DialogueSignature.objects.values_list("dialogue_id", "twin_id"))
    recall, precision, _ = _scores(samples, dialogues)
    assert (recall, precision) == (1.0, 1.0)
    assert all(twin < pk for pk, twin in checked.items() if twin)
    call_command("find_duplicates", "--rebuild", stdout=io.StringIO())
    rebuilt = dict(DialogueSignature.objects.values_list("dialogue_id", "twin_id"))
    assert {pk for pk, twin in rebuilt.items() if twin} == {pk for pk, t in checked.items() if t}
    assert _scores(samples, dialogues) == (1.0, 1.0, 15)
    assert SignatureBand.objects.count() == 45 * signatures.band_shape(0.8)[0]


def test_find_duplicates_indexes_only_what_is_missing(capsys):
    run = RunFactory()
    first = _dialogue(run, 0, ["the same words in every copy of this turn", "and a reply here"])
    _dialogue(run, 1, ["the same words in every copy of this turn", "and a reply here"])
    duplicates.dialogue_check(dialogue_id=first.pk)
    call_command("find_duplicates")
    assert "Indexed 1 dialogues" in capsys.readouterr().out
    assert DialogueSignature.objects.get(twin__isnull=False).twin_id == first.pk


def test_regenerated_twin_frees_its_copy_and_the_copy_finds_another():
    """A copy whose twin is regenerated into something else is matched again: against a
    second copy completed earlier than it, or nothing."""
    run = RunFactory()
    text = [f"shared turn {i} with several common words and {i * 13}" for i in range(6)]
    a = _dialogue(run, 0, text)
    b = _dialogue(run, 1, text)
    c = _dialogue(run, 2, text)
    for dialogue in (a, b, c):
        duplicates.dialogue_check(dialogue_id=dialogue.pk)
    assert DialogueSignature.objects.get(pk=b.pk).twin_id == a.pk
    assert DialogueSignature.objects.get(pk=c.pk).twin_id in (a.pk, b.pk)
    Turn.objects.filter(dialogue=a).update(text="completely different words now appear")
    Dialogue.objects.filter(pk=a.pk).update(finished_at=START + timedelta(hours=1))
    duplicates.dialogue_check(dialogue_id=a.pk)
    marks = dict(DialogueSignature.objects.values_list("dialogue_id", "twin_id"))
    assert marks == {a.pk: None, b.pk: None, c.pk: b.pk}


def test_check_skips_a_dialogue_that_is_not_complete():
    run = RunFactory()
    dialogue = _dialogue(run, 0, ["some words here"])
    Dialogue.objects.filter(pk=dialogue.pk).update(status=Dialogue.Status.PENDING)
    assert duplicates.dialogue_check(dialogue_id=dialogue.pk) is None
    assert not DialogueSignature.objects.exists()


def test_checking_twice_keeps_one_signature_and_the_run_vocabulary_exact():
    run = RunFactory()
    dialogue = _dialogue(run, 0, ["The cat sat.", "Hi there", "the CAT ran", "bye now"])
    assert run.scenario.personas.get(position=0).side == Side.ASSISTANT
    duplicates.dialogue_check(dialogue_id=dialogue.pk)
    duplicates.dialogue_check(dialogue_id=dialogue.pk)
    signature = DialogueSignature.objects.get()
    # The assistant's turns: "the cat sat", "the cat ran" (6 words, 4 bigrams); distinct:
    # the, cat, sat, ran and "the cat", "cat sat", "cat ran".
    assert (signature.assistant_words, signature.assistant_bigrams) == (6, 4)
    assert RunNgram.objects.filter(run=run, n=1, dialogues=1).count() == 4
    assert RunNgram.objects.filter(run=run, n=2, dialogues=1).count() == 3
    assert RunNgram.objects.count() == 7


def test_completion_signal_enqueues_the_check():
    run = RunFactory()
    a = _dialogue(run, 0, ["identical words in both dialogues", "and the same answer"])
    b = _dialogue(run, 1, ["identical words in both dialogues", "and the same answer"])
    for dialogue in (a, b):  # tasks run inline without a broker
        dialogue_completed.send(
            sender=Dialogue, dialogue_id=dialogue.pk, run_id=run.pk, regenerated=False
        )
    signature = DialogueSignature.objects.get(pk=b.pk)
    assert (signature.twin_id, signature.similarity) == (a.pk, 1.0)


def test_review_screen_links_the_twin_in_the_same_queries(
    client, reviewer, django_assert_max_num_queries
):
    from tests.review.helpers import url
    from tests.review.test_queries import DIALOGUE_PAGE_QUERIES

    run = RunFactory()
    same = ["A question about <b>sines</b>", "An answer with enough words in it"]
    first, copy = _dialogue(run, 0, same), _dialogue(run, 1, same)
    for dialogue in (first, copy):
        duplicates.dialogue_check(dialogue_id=dialogue.pk)
    Dialogue.objects.filter(pk=copy.pk).update(variables={"level": "<i>beginner</i>"})
    client.force_login(reviewer)
    with django_assert_max_num_queries(DIALOGUE_PAGE_QUERIES):
        page = client.get(url("dialogue", copy)).content.decode()
    assert (
        f'Near-duplicate of <a href="/review/dialogues/{first.pk}/">dialogue #{first.pk}</a>'
        in page
    )
    assert "(estimated similarity 100%)" in page
    assert "level: &lt;i&gt;beginner&lt;/i&gt;" in page
    assert "Near-duplicate of" not in client.get(url("dialogue", first)).content.decode()


def _pending(dialogues) -> None:
    for dialogue in dialogues:
        statements.pending_add(dialogue.pk)


@pytest.mark.parametrize("batch_size", [90, 7, 1])
def test_recall_and_precision_when_checked_in_batches(batch_size):
    """Copies in the same batch as their original, or in a later one: every copy is marked
    with its original as the twin, no original is marked, nothing is left pending."""
    samples = corpus(originals=60, copies=30, topics=3, seed=7)
    dialogues = _corpus_run(samples)
    _pending(dialogues)
    assert duplicates.pending_check(batch_size=batch_size) == 90
    assert _scores(samples, dialogues) == (1.0, 1.0, 30)
    assert not PendingDuplicateCheck.objects.exists()


def test_batches_checked_newest_first_mark_the_same_dialogues():
    """Batches in any order: a later batch holding originals marks the copies checked before
    it, each with an earlier twin."""
    samples = corpus(originals=30, copies=15, topics=3, seed=3)
    dialogues = _corpus_run(samples)
    ids = [dialogue.pk for dialogue in dialogues]
    for end in range(len(ids), 0, -10):
        duplicates.batch_check(dialogue_ids=ids[max(0, end - 10) : end])
    recall, precision, _ = _scores(samples, dialogues)
    assert (recall, precision) == (1.0, 1.0)
    twins = DialogueSignature.objects.filter(twin__isnull=False).values_list("pk", "twin_id")
    assert all(twin < pk for pk, twin in twins)


def test_a_batch_costs_the_same_queries_whatever_its_size(
    django_assert_max_num_queries, monkeypatch
):
    samples = corpus(originals=40, copies=20, topics=3, seed=5)
    dialogues = _corpus_run(samples)
    # The savepoint and its release, the lock (PostgreSQL), pending ids, the dialogues, their
    # turns, old signatures, candidates; the signatures (full groups of rows, then the rest),
    # the bands and the vocabulary (one statement each); the pending rows. The sweep for lost
    # checks, when due, adds its one query (it finds none).
    for part, sweep_due in ((dialogues[:6], False), (dialogues[6:], True)):
        _pending(part)
        if sweep_due:
            monkeypatch.setattr(queue, "_swept_at", None)
        with django_assert_max_num_queries(13 + sweep_due):
            assert duplicates.pending_check(batch_size=100) == len(part)
    assert _scores(samples, dialogues) == (1.0, 1.0, 20)


def test_the_sweep_queues_a_completed_dialogue_whose_check_was_lost(monkeypatch):
    """A dialogue completed with no pending row (the completing worker stopped after the
    commit) is indexed by the next check task that sweeps: in a new worker process, or ten
    minutes after the last sweep; not in between."""
    run = RunFactory()
    same = ["identical words in every one of them", "and the same answer"]
    first, lost, later = (_dialogue(run, i, same) for i in range(3))
    _complete(first)
    assert not DialogueSignature.objects.filter(pk=lost.pk).exists()
    _complete(later)  # the sweep was done less than ten minutes ago
    assert not DialogueSignature.objects.filter(pk=lost.pk).exists()
    monkeypatch.setattr(queue, "_swept_at", queue._swept_at - queue.SWEEP_SECONDS)
    check_near_duplicates.delay()
    marks = dict(DialogueSignature.objects.values_list("dialogue_id", "twin_id"))
    assert marks == {first.pk: None, lost.pk: first.pk, later.pk: first.pk}
    assert not PendingDuplicateCheck.objects.exists()
    monkeypatch.setattr(queue, "_swept_at", None)  # a new worker process
    assert duplicates.pending_check() == 0


def test_a_dialogue_regenerated_after_its_check_is_checked_again():
    """Its completion queues it again: its signature and vocabulary are replaced and its copy,
    now unlike it, is no longer marked."""
    run = RunFactory()
    text = [f"shared turn {i} with several common words and {i * 13}" for i in range(4)]
    first, copy = _dialogue(run, 0, text), _dialogue(run, 1, text)
    for dialogue in (first, copy):
        _complete(dialogue)
    assert DialogueSignature.objects.get(pk=copy.pk).twin_id == first.pk
    Dialogue.objects.filter(pk=first.pk).update(status=Dialogue.Status.GENERATING)
    _complete(first)  # a late message while it regenerates: not complete, out of the index
    assert dict(DialogueSignature.objects.values_list("dialogue_id", "twin_id")) == {copy.pk: None}
    Turn.objects.filter(dialogue=first).update(text="now the text is another one entirely")
    Dialogue.objects.filter(pk=first.pk).update(
        status=Dialogue.Status.COMPLETE, finished_at=START + timedelta(hours=1)
    )
    _complete(first, regenerated=True)
    marks = dict(DialogueSignature.objects.values_list("dialogue_id", "twin_id"))
    assert marks == {first.pk: None, copy.pk: None}
    assert not PendingDuplicateCheck.objects.exists()
    assert RunNgram.objects.filter(run=run, dialogues__gt=1).count() == 0


def test_a_regeneration_that_never_completes_takes_the_dialogue_out_of_the_index(reviewer):
    """Its start queues the check: the next check task (another dialogue's) finds it no
    longer complete, takes its old signature and vocabulary out and matches its copy again."""
    from review import services

    run = RunFactory()
    text = [f"shared turn {i} with several common words and {i * 13}" for i in range(4)]
    first, copy = _dialogue(run, 0, text), _dialogue(run, 1, text)
    other = _dialogue(run, 2, ["completely distinct vocabulary", "nothing else"])
    for dialogue in (first, copy):
        _complete(dialogue)
    assert DialogueSignature.objects.get(pk=copy.pk).twin_id == first.pk
    turn = first.turns.get(position=0)
    # Not captured: the generation's task is never sent, as when its worker stops for good.
    services.dialogue_regenerate(dialogue_id=first.pk, turn_id=turn.pk, actor=reviewer)
    assert PendingDuplicateCheck.objects.filter(pk=first.pk).exists()
    Dialogue.objects.filter(pk=first.pk).update(status=Dialogue.Status.FAILED)
    _complete(other)
    marks = dict(DialogueSignature.objects.values_list("dialogue_id", "twin_id"))
    assert marks == {copy.pk: None, other.pk: None}
    assert not SignatureBand.objects.filter(dialogue_id=first.pk).exists()
    assert not RunNgram.objects.filter(run=run, dialogues__gt=1).exists()
    assert not PendingDuplicateCheck.objects.exists()


def _complete(dialogue, regenerated: bool = False) -> None:
    dialogue_completed.send(
        sender=Dialogue, dialogue_id=dialogue.pk, run_id=dialogue.run_id, regenerated=regenerated
    )


@pytest.mark.redis
def test_a_burst_of_completions_sends_one_task_until_it_starts():
    """With a broker, the first completion sends the task, the next ones only queue their
    dialogue; the task lowers the flag before it reads, then checks them all at once."""
    run = RunFactory()
    same = ["identical words in every one of them", "and the same answer"]
    dialogues = [_dialogue(run, i, same) for i in range(3)]
    with (
        mock.patch.object(queue, "tasks_run_inline", return_value=False),
        mock.patch.object(check_near_duplicates, "apply_async") as send,
    ):
        queue.check_queue_reset()
        for dialogue in dialogues:
            _complete(dialogue)
        assert send.call_count == 1
        assert PendingDuplicateCheck.objects.count() == 3
        assert duplicates.pending_check() == 3
        _complete(dialogues[0])
        assert send.call_count == 2
        queue.check_queue_reset()
    marks = dict(DialogueSignature.objects.values_list("dialogue_id", "twin_id"))
    assert marks == {dialogues[0].pk: None, dialogues[1].pk: dialogues[0].pk,
                     dialogues[2].pk: dialogues[0].pk}  # fmt: skip


@pytest.mark.redis
def test_a_process_that_knows_when_the_task_starts_queues_without_asking_redis():
    """The flag holds when its task starts: until shortly before then, a completion only
    writes its pending row; after it, Redis is asked again (the task may have read)."""
    run = RunFactory()
    dialogues = [_dialogue(run, i, [f"words of dialogue {i}"]) for i in range(4)]
    with mock.patch.object(queue, "tasks_run_inline", return_value=False):
        queue.check_queue_reset()
        queue._redis().set(queue.FLAG_KEY, repr(time.time() + 10))  # another process's task
        assert not queue.check_queue(dialogue_id=dialogues[0].pk)
        with mock.patch.object(queue, "_redis", side_effect=AssertionError("Redis asked")):
            assert not queue.check_queue(dialogue_id=dialogues[1].pk)
        queue._task_due = time.time() + queue.CLOCK_SKEW_SECONDS / 2
        queue._redis().delete(queue.FLAG_KEY)  # that task started: the next completion sends
        assert queue.check_queue(dialogue_id=dialogues[2].pk)
        with mock.patch.object(queue, "_redis", side_effect=AssertionError("Redis asked")):
            assert not queue.check_queue(dialogue_id=dialogues[3].pk)
        queue.check_queue_reset()
    assert PendingDuplicateCheck.objects.count() == 4


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_never_both_miss_a_pair_that_spans_them():
    """Two batches at once, the original in one and its copy in the other, both about to read
    the index: the second waits for the first to commit and finds the pair."""
    run = RunFactory()
    text = [f"shared turn {i} with several common words and {i * 13}" for i in range(4)]
    original, copy = _dialogue(run, 0, text), _dialogue(run, 1, text)
    both_reading = threading.Barrier(2)
    read = statements.partners
    errors: list[BaseException] = []

    def partners(keys):
        # Broken when the other batch waits for the index lock.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_reading.wait(timeout=2)
        return read(keys)

    def check(dialogue_id: int) -> None:
        try:
            duplicates.batch_check(dialogue_ids=[dialogue_id])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    with mock.patch.object(statements, "partners", partners):
        threads = [threading.Thread(target=check, args=(d.pk,)) for d in (copy, original)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors
    assert DialogueSignature.objects.get(pk=copy.pk).twin_id == original.pk
