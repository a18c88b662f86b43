"""The statements of a near-duplicate check, written out as portable SQL.

The ones paid per dialogue, per band key or per n-gram skip the ORM's query building (which
cost more than running them): one statement a batch for the bands, the candidates and the
run vocabulary, their integers written into the text. Each runs unchanged on SQLite and
PostgreSQL (INSERT ... ON CONFLICT DO UPDATE included).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from itertools import chain

from django.db import connection

from review.models import DialogueSignature, PendingDuplicateCheck, RunNgram, SignatureBand


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _table(model) -> str:
    return _q(model._meta.db_table)


# A statement with at most this many parameters is parsed once by psycopg and reused.
CACHED_PARAMS = 50


@cache
def _signatures_sql(vendor: str, columns: tuple[str, ...], rows: int) -> str:
    names = ", ".join(_q(column) for column in columns)
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return f"INSERT INTO {_table(DialogueSignature)} ({names}) VALUES {', '.join([row] * rows)}"


def signatures_insert(columns: tuple[str, ...], rows: Sequence[tuple]) -> None:
    """Insert signature rows (values in column order, ready for the database; bytes among
    them, so bound as parameters) with statements of up to CACHED_PARAMS values: one for a
    few rows, else the same statement for every full group of rows, sent at once (psycopg
    pipelines them), and one for the rest."""
    if not rows:
        return
    per = max(1, CACHED_PARAMS // len(columns))
    full = len(rows) - len(rows) % per if len(rows) > per else 0
    with connection.cursor() as cursor:
        if full:
            cursor.executemany(
                _signatures_sql(connection.vendor, columns, per),
                [
                    [value for row in rows[i : i + per] for value in row]
                    for i in range(0, full, per)
                ],
            )
        if full < len(rows):
            rest = rows[full:]
            sql = _signatures_sql(connection.vendor, columns, len(rest))
            cursor.execute(sql, [value for row in rest for value in row])


def _integers_text(row: str, values: Iterable[int]) -> str:
    """`values` written out for a statement's text, as many to a row as `row` takes
    ("(%d,%d)", "%d"), the rows comma-separated; "" for none.

    `%d` takes nothing but a number, so only integers reach the text. Formatting them costs
    a fraction of binding each as a parameter (which psycopg does by parsing the statement
    for its placeholders, then adapting every value), `%` formats them faster than an
    f-string's `:d`, and one `%` over all the rows faster than one per row. One statement
    per batch, whatever its size: its text has no limit where parameters have one."""
    values = tuple(values)
    return ",".join([row] * (len(values) // row.count("%d"))) % values


@cache
def _ngrams_sql(vendor: str) -> str:
    table, dialogues = _table(RunNgram), _q("dialogues")
    names = ", ".join(_q(column) for column in ("run_id", "n", "key", "dialogues"))
    return (
        f"INSERT INTO {table} ({names}) VALUES {{}}"
        f" ON CONFLICT ({_q('run_id')}, {_q('n')}, {_q('key')})"
        f" DO UPDATE SET {dialogues} = {table}.{dialogues} + excluded.{dialogues}"
    )


def ngrams_add(groups: Iterable[tuple[int, int, Sequence[int]]]) -> None:
    """Add dialogues to the counts of n-grams of length n in a run's vocabulary, or insert
    their rows, for each (run, n, [key, dialogues, key, dialogues, ...]): one statement.
    Batches hold the index lock, so no two write the vocabulary at once."""
    written = []
    for run_id, n, flat in groups:
        # The group's run and n are written once, into the row its n-grams fill.
        row = _integers_text("(%d,%d,", (run_id, n)) + "%d,%d)"
        written.append(_integers_text(row, flat))
    values = ",".join(filter(None, written))
    if values:
        with connection.cursor() as cursor:
            cursor.execute(_ngrams_sql(connection.vendor).format(values))


@cache
def _bands_sql(vendor: str) -> str:
    return f"INSERT INTO {_table(SignatureBand)} ({_q('dialogue_id')}, {_q('key')}) VALUES {{}}"


def bands_insert(rows: Iterable[tuple[int, int]]) -> None:
    """Insert (dialogue, band key) rows: one statement."""
    values = _integers_text("(%d,%d)", chain.from_iterable(rows))
    if values:
        with connection.cursor() as cursor:
            cursor.execute(_bands_sql(connection.vendor).format(values))


@cache
def _partners_sql(vendor: str) -> str:
    band, signature = _table(SignatureBand), _table(DialogueSignature)
    return (
        f"SELECT b.{_q('dialogue_id')}, b.{_q('key')}, s.{_q('completed_us')},"
        f" s.{_q('minhash')} FROM {band} b JOIN {signature} s"
        f" ON s.{_q('dialogue_id')} = b.{_q('dialogue_id')}"
        f" WHERE b.{_q('key')} IN ({{}})"
    )


def partners(keys: Iterable[int]) -> list[tuple[int, int, int, bytes]]:
    """(dialogue, band key, completed_us, minhash) of every band row with one of `keys`:
    one query."""
    values = _integers_text("%d", keys)
    if not values:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_partners_sql(connection.vendor).format(values))
        return cursor.fetchall()


def set_twin(
    *, dialogue_id: int, twin_id: int | None, similarity: float | None, only_if_none: bool
) -> None:
    sql = (
        f"UPDATE {_table(DialogueSignature)} SET {_q('twin_id')} = %s, {_q('similarity')} = %s"
        f" WHERE {_q('dialogue_id')} = %s"
    )
    if only_if_none:
        sql += f" AND {_q('twin_id')} IS NULL"
    with connection.cursor() as cursor:
        cursor.execute(sql, [twin_id, similarity, dialogue_id])


@cache
def _pending_sql(vendor: str) -> str:
    return (
        f"INSERT INTO {_table(PendingDuplicateCheck)} ({_q('dialogue_id')}) VALUES (%s)"
        f" ON CONFLICT ({_q('dialogue_id')}) DO NOTHING"
    )


def pending_add(dialogue_id: int) -> None:
    """Queue the dialogue for its check (again). Paid at every completion, in the worker
    that completed the dialogue."""
    with connection.cursor() as cursor:
        cursor.execute(_pending_sql(connection.vendor), [dialogue_id])


# Any fixed number: the advisory lock's name on PostgreSQL.
INDEX_LOCK = 0x6E656172_64757073


def index_lock() -> None:
    """Hold the index until the transaction ends, so batches of checks run one at a time and
    each reads the bands of every batch before it (two batches at once would not see each
    other's uncommitted rows and could both miss a pair that spans them). PostgreSQL needs a
    lock for that; SQLite's transactions begin IMMEDIATE (settings), taking its single write
    lock at once."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INDEX_LOCK])
