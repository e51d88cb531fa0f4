"""CLI verbs that read a store never create one: a `storage` that points at nothing is named in one line
(exit 2), never answered with an empty list from a store made on the spot, never a raw SQL error.

Every verb that only reads, or changes only what is there already, runs as the real command against a
real SQLite file and the real PostgreSQL server (a throwaway schema). `apikeys create` still creates the
store, after which the readers answer from it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from ledgergate.audit.checkpoint import load_or_create_signer
from tests.support.pg import PG, throwaway_schema, url_for

#: verbs that only read
READERS: list[list[str]] = [
    ["approvals", "list", "--status", "all"], ["approvals", "show", "ap_nothing"],
    ["apikeys", "list"], ["tools", "list"],
    ["sessions", "list"], ["sessions", "show", "s1"], ["sessions", "export", "s1", "-o", "{out}/s.bundle"],
    ["audit", "tail"], ["audit", "verify"], ["audit", "siem"], ["audit", "export", "-o", "{out}/b.bundle"],
    ["audit", "prove", "gw", "0", "-o", "{out}/p.tlog-proof"],
]
#: verbs that change only what is there already (an approval, a key, a tool seen, a session's record)
CHANGERS: list[list[str]] = [
    ["approvals", "approve", "ap_nothing", "--reason", "ok"], ["approvals", "deny", "ap_nothing", "--reason", "no"],
    ["apikeys", "revoke", "ak_nothing"], ["tools", "accept", "bank", "lookup"], ["sessions", "replay", "s1"],
    ["audit", "seal-tail", "--log", "gw", "--yes"],
]
VERBS = READERS + CHANGERS
#: one verb of each way of opening a store (approvals, API keys, tool fingerprints, the ledger's readers)
OPENERS: list[list[str]] = [["approvals", "list"], ["apikeys", "revoke", "ak_nothing"], ["tools", "list"],
                            ["sessions", "list"], ["audit", "siem"]]


def _cli(args: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    argv = [a.format(out=config.parent) for a in args]
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", *argv, "--config", str(config)],
                          check=False, capture_output=True, text=True, timeout=120, cwd=config.parent, env=env)


def _all(config: Path, verbs: list[list[str]]) -> list[tuple[list[str], subprocess.CompletedProcess[str]]]:
    with ThreadPoolExecutor(8) as pool:
        return list(zip(verbs, pool.map(lambda v: _cli(v, config), verbs), strict=True))


def _config(directory: Path, storage: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ledgergate.yaml"
    path.write_text(f'storage: "{storage}"\nidentity:\n  api_keys: true\naudit:\n  signing_key: ./keys/ledger.key\n')
    load_or_create_signer(directory / "keys" / "ledger.key", "ledgergate")  # the verifier key is there
    return path


def _each_names_the_missing_store(config: Path, where: str, why: str, verbs: list[list[str]] = VERBS) -> None:
    problems = []
    for verb, run in _all(config, verbs):
        lines = run.stderr.splitlines()
        line = lines[0] if lines else ""
        if (run.returncode != 2 or len(lines) != 1 or not line.startswith("error storage: no ")
                or where not in line or why not in line or "check `storage` in the config" not in line
                or "OperationalError" in line or run.stdout or "Hunter2Secret" in line):
            problems.append((" ".join(verb), run.returncode, run.stdout[-300:], run.stderr[-600:]))
    assert not problems, "\n".join(map(repr, problems))


def _tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def test_a_mistyped_sqlite_path_is_named_and_nothing_is_created(tmp_path: Path) -> None:
    config = _config(tmp_path, "sqlite:///./typo/ledgergate.db")
    _each_names_the_missing_store(config, str(tmp_path / "typo" / "ledgergate.db"), "the file does not exist")
    assert not (tmp_path / "typo").exists()


def test_a_sqlite_file_without_ledgergate_tables_is_named_and_left_as_it_was(tmp_path: Path) -> None:
    """A file that is not a ledgergate store (another program's database, or an empty one an earlier
    version's `tools list` made): `sessions list` and `audit tail` said `OperationalError: no such table`,
    the others answered "nothing" and added their tables to it."""
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE inventory (item TEXT)")
    conn.commit()
    conn.close()
    config = _config(tmp_path, "sqlite:///./other.db")
    _each_names_the_missing_store(config, str(db), "the database has no ledger_logs", OPENERS)
    assert _tables(db) == {"inventory"}


def test_a_folder_or_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    (tmp_path / "adir.db").mkdir()
    config = _config(tmp_path / "a", f"sqlite:///{tmp_path / 'adir.db'}")
    _each_names_the_missing_store(config, str(tmp_path / "adir.db"), "it is a folder, not a database", OPENERS)
    (tmp_path / "port.yaml").write_text("x")
    config = _config(tmp_path / "b", f"sqlite:///{tmp_path / 'port.yaml' / 'x.db'}")
    _each_names_the_missing_store(config, str(tmp_path / "port.yaml" / "x.db"),
                                  f"{tmp_path / 'port.yaml'} is not a directory", OPENERS)


@pytest.fixture
def schema() -> Iterator[str]:
    with throwaway_schema("lg_readers") as name:
        yield name


def _pg_tables(schema: str) -> set[str]:
    with psycopg.connect(PG, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                            (schema,)).fetchall()
    return {r[0] for r in rows}


@pytest.mark.postgres
def test_a_postgres_database_without_the_tables_is_named_and_left_as_it_was(tmp_path: Path, schema: str) -> None:
    """The PostgreSQL form of a wrong `storage`: a database (or schema) nothing ever wrote to. The URL's
    password is never shown (`_each_names_the_missing_store` checks)."""
    url = url_for(schema).replace("postgres@", "postgres:Hunter2Secret@")  # trust auth: any password passes
    config = _config(tmp_path, url)
    _each_names_the_missing_store(config, f"postgresql://postgres@127.0.0.1:5432/test, schema {schema}",
                                  "the database has no ledger_logs")
    assert _pg_tables(schema) == set()


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_write_verb_creates_the_store_and_the_readers_then_answer_from_it(tmp_path: Path, engine: str) -> None:
    with throwaway_schema("lg_readers") as name:
        url = "sqlite:///./data/ledgergate.db" if engine == "sqlite" else url_for(name)
        config = _config(tmp_path, url)
        created = _cli(["apikeys", "create", "--name", "ci", "--groups", "ci"], config)
        assert created.returncode == 0, created.stderr
        listed = _cli(["apikeys", "list", "--json"], config)
        assert listed.returncode == 0 and '"name": "ci"' in listed.stdout, listed.stderr
        for verb, words in ((["approvals", "list"], "no pending approvals"), (["sessions", "list"], "no sessions"),
                            (["tools", "list"], "no tools seen yet")):
            run = _cli(verb, config)
            assert run.returncode == 0 and words in run.stdout, (verb, run.stdout, run.stderr)
