"""Near-duplicate index: MinHash signatures, LSH bands and each run's vocabulary."""

from __future__ import annotations

from django.db import models

from generation.models import Dialogue, GenerationRun


class DialogueSignature(models.Model):
    """A complete dialogue's MinHash signature and, when it has one, its earlier twin.

    Written when the dialogue completes (and again after a regeneration) by
    `review.duplicates`. `completed_us` orders the checks: a dialogue is a near-duplicate when
    a dialogue completed before it is at least `SYNTHREVIEW_NEAR_DUPLICATE_THRESHOLD` similar;
    the earlier one stays exportable. The per-dialogue text figures feed the run's diversity
    panel, so the page never reads turn texts.
    """

    dialogue = models.OneToOneField(
        Dialogue, on_delete=models.CASCADE, primary_key=True, related_name="signature"
    )
    minhash = models.BinaryField(help_text="The MinHash values, unsigned 32-bit little-endian.")
    # When the dialogue completed (microseconds since the epoch), then its id: the check order.
    completed_us = models.BigIntegerField()
    twin = models.ForeignKey(
        Dialogue, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    similarity = models.FloatField(null=True, blank=True, help_text="Estimated Jaccard to twin.")
    assistant_words = models.PositiveIntegerField(default=0)
    assistant_bigrams = models.PositiveIntegerField(default=0)
    # Hash of the normalised opening turn: equal hashes are repeated openings.
    opening_hash = models.BigIntegerField(null=True, blank=True)
    # The distinct assistant n-grams (signed 64-bit hashes) this dialogue added to its run's
    # vocabulary (`RunNgram`), so a regeneration can take them back out.
    ngram_hashes = models.BinaryField(default=b"")

    def __str__(self) -> str:
        return f"Signature of dialogue {self.dialogue_id}"

    @property
    def is_near_duplicate(self) -> bool:
        return self.twin_id is not None


class SignatureBand(models.Model):
    """One LSH band of a signature: dialogues sharing a band key are candidate twins.

    Rows in the database, not an in-memory index, so every worker and the web process see one
    index and it grows with the database, not with one machine's memory.
    """

    dialogue = models.ForeignKey(Dialogue, on_delete=models.CASCADE, related_name="+")
    key = models.BigIntegerField(help_text="Hash of the band's number and its MinHash values.")

    class Meta:
        indexes = [models.Index(fields=["key"], name="signature_band_key")]

    def __str__(self) -> str:
        return f"Band {self.key} of dialogue {self.dialogue_id}"


class RunNgram(models.Model):
    """How many of a run's dialogues use one assistant n-gram: the run's vocabulary, kept
    up to date at each completion so distinct-1/distinct-2 are one COUNT."""

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="+")
    n = models.PositiveSmallIntegerField()
    key = models.BigIntegerField()
    dialogues = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "n", "key"], name="run_ngram_unique")]

    def __str__(self) -> str:
        return f"{self.n}-gram {self.key} of run {self.run_id}"


class PendingDuplicateCheck(models.Model):
    """A completed (or regenerated) dialogue waiting for its near-duplicate check.

    Written when the dialogue completes; the check task takes pending dialogues in batches,
    in completion order, and removes their rows in the transaction that indexes them, so a
    check that fails leaves its dialogues pending for the next one.
    """

    dialogue = models.OneToOneField(
        Dialogue, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"Near-duplicate check of dialogue {self.dialogue_id}"
