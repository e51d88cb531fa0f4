"""Throwaway schemas on the real PostgreSQL server (127.0.0.1:5432, database `test`, trust auth).

`.ci/run` starts the server, so an unreachable one is a test failure, never a skip.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG = "postgresql://postgres@127.0.0.1:5432/test"


def url_for(schema: str, **params: str) -> str:
    """A store URL whose connections work inside `schema` (extra query parameters allowed)."""
    query = "".join(f"{k}={v}&" for k, v in params.items())
    return f"{PG}?{query}options=-csearch_path%3D{schema}"


@contextmanager
def throwaway_schema(prefix: str) -> Iterator[str]:
    """A fresh schema, dropped afterwards; yields its name."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(PG, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with psycopg.connect(PG, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
