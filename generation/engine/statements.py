"""The two statements every generated turn costs, written out as portable SQL.

Each is one statement that runs unchanged on SQLite and PostgreSQL, with values converted by the
model fields themselves (`get_db_prep_save`, as the ORM does), so a field added to the models
is picked up. Building the same statements through the ORM's query machinery cost about three
times their execution, on the path of every turn.
"""

from __future__ import annotations

from functools import cache

from django.db import connection

from generation.models import Dialogue, Turn


def _column(model, name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


def _value(model, name: str, value):
    return model._meta.get_field(name).get_db_prep_save(value, connection)


@cache
def _renew_sql(vendor: str, pending: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{_column(Dialogue, name)} = %s" for name in pending)
    return (
        f"UPDATE {connection.ops.quote_name(Dialogue._meta.db_table)}"
        f" SET {_column(Dialogue, 'lease_expires_at')} = %s, {assignments}"
        f" WHERE {_column(Dialogue, 'id')} = %s AND {_column(Dialogue, 'lease_owner')} = %s"
        f" AND {_column(Dialogue, 'status')} = %s"
    )


def lease_renew_with_usage(*, dialogue_id: int, owner: str, expires_at, pending: dict) -> bool:
    """Renew the lease and write the pending usage, if `owner` still holds the lease."""
    sql = _renew_sql(connection.vendor, tuple(pending))
    params = [
        _value(Dialogue, "lease_expires_at", expires_at),
        *(_value(Dialogue, name, value) for name, value in pending.items()),
        dialogue_id,
        owner,
        Dialogue.Status.GENERATING.value,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


@cache
def _insert_sql(vendor: str) -> tuple[str, tuple]:
    fields = tuple(f for f in Turn._meta.concrete_fields if not f.primary_key)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table = connection.ops.quote_name(Turn._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", fields


def turn_insert(turn: Turn) -> None:
    """Insert a new turn (its id is not read back: the engine never needs it)."""
    sql, fields = _insert_sql(connection.vendor)
    params = [f.get_db_prep_save(f.pre_save(turn, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
