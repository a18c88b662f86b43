"""The statements of a near-duplicate check, written out as portable SQL.

Every completed dialogue pays for these in the worker, so they skip the ORM's query building
(which cost more than running them) and come in a few fixed shapes, short enough for psycopg
to parse each query text once. Each runs unchanged on SQLite and PostgreSQL (INSERT ... ON CONFLICT DO
UPDATE included).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache

from django.db import connection

from review.models import DialogueSignature, RunNgram, SignatureBand

# Band keys per SELECT: one dialogue's keys stay under psycopg's limit of 50 parameters for
# caching a parsed query; a batch (indexing existing data) sends larger queries, fewer of them.
KEYS_PER_QUERY = 32
KEYS_PER_BATCH_QUERY = 2000


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _table(model) -> str:
    return _q(model._meta.db_table)


# A statement with at most this many parameters is parsed once by psycopg and reused.
CACHED_PARAMS = 50


@cache
def _insert_sql(vendor: str, model_label: str, columns: tuple[str, ...], rows: int = 1) -> str:
    model = {m._meta.label: m for m in (DialogueSignature, SignatureBand, RunNgram)}[model_label]
    names = ", ".join(_q(column) for column in columns)
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    sql = f"INSERT INTO {_table(model)} ({names}) VALUES {', '.join([row] * rows)}"
    if model is RunNgram:
        sql += (
            f" ON CONFLICT ({_q('run_id')}, {_q('n')}, {_q('key')}) DO UPDATE"
            f" SET {_q('dialogues')} = {_table(RunNgram)}.{_q('dialogues')}"
            f" + excluded.{_q('dialogues')}"
        )
    return sql


def insert_rows(model, columns: tuple[str, ...], rows: Sequence[tuple]) -> None:
    """Insert `rows` (values in column order, ready for the database): a few as one
    statement, more with one short statement sent for every row at once (psycopg pipelines
    them). RunNgram rows add their `dialogues` to an existing row's."""
    if not rows:
        return
    with connection.cursor() as cursor:
        if len(rows) * len(columns) <= CACHED_PARAMS:
            sql = _insert_sql(connection.vendor, model._meta.label, columns, len(rows))
            cursor.execute(sql, [value for row in rows for value in row])
        else:
            sql = _insert_sql(connection.vendor, model._meta.label, columns)
            cursor.executemany(sql, rows)


@cache
def _partners_sql(vendor: str, keys: int) -> str:
    band, signature = _table(SignatureBand), _table(DialogueSignature)
    return (
        f"SELECT b.{_q('dialogue_id')}, b.{_q('key')}, s.{_q('completed_us')},"
        f" s.{_q('minhash')} FROM {band} b JOIN {signature} s"
        f" ON s.{_q('dialogue_id')} = b.{_q('dialogue_id')}"
        f" WHERE b.{_q('key')} IN ({', '.join(['%s'] * keys)})"
    )


def partners(keys: Sequence[int]) -> list[tuple[int, int, int, bytes]]:
    """(dialogue, band key, completed_us, minhash) of every band row with one of `keys`."""
    rows: list[tuple[int, int, int, bytes]] = []
    size = KEYS_PER_QUERY if len(keys) <= KEYS_PER_QUERY else KEYS_PER_BATCH_QUERY
    with connection.cursor() as cursor:
        for start in range(0, len(keys), size):
            chunk = list(keys[start : start + size])
            cursor.execute(_partners_sql(connection.vendor, len(chunk)), chunk)
            rows += cursor.fetchall()
    return rows


def set_twin(*, dialogue_id: int, twin_id: int, similarity: float, only_if_none: bool) -> None:
    sql = (
        f"UPDATE {_table(DialogueSignature)} SET {_q('twin_id')} = %s, {_q('similarity')} = %s"
        f" WHERE {_q('dialogue_id')} = %s"
    )
    if only_if_none:
        sql += f" AND {_q('twin_id')} IS NULL"
    with connection.cursor() as cursor:
        cursor.execute(sql, [twin_id, similarity, dialogue_id])


@cache
def _text_sql(vendor: str) -> str:
    from generation.models import Dialogue, Turn

    dialogue, turn = _table(Dialogue), _table(Turn)
    return (
        f"SELECT d.{_q('run_id')}, d.{_q('finished_at')}, d.{_q('created_at')}, t.{_q('side')},"
        f" t.{_q('text')} FROM {dialogue} d JOIN {turn} t ON t.{_q('dialogue_id')} = d.{_q('id')}"
        f" WHERE d.{_q('id')} = %s AND d.{_q('status')} = %s AND t.{_q('discarded_at')} IS NULL"
        f" ORDER BY t.{_q('position')}, t.{_q('id')}"
    )


def dialogue_text(dialogue_id: int, status: str) -> list[tuple]:
    """(run, finished_at, created_at, side, text) of the dialogue's live turns in order, if
    it has `status`. The times come as the driver gives them (`as_datetime`)."""
    with connection.cursor() as cursor:
        cursor.execute(_text_sql(connection.vendor), [dialogue_id, status])
        return cursor.fetchall()


def as_datetime(value: datetime | str) -> datetime:
    """A timestamp read without the ORM: psycopg gives an aware datetime; SQLite a naive one
    (or its text) in UTC, as Django stores it with USE_TZ."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def stored_ngrams(dialogue_id: int) -> bytes | None:
    """The dialogue's recorded n-grams if it is indexed, else None."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_q('ngram_hashes')} FROM {_table(DialogueSignature)}"
            f" WHERE {_q('dialogue_id')} = %s",
            [dialogue_id],
        )
        row = cursor.fetchone()
    return None if row is None else bytes(row[0])
