"""A bundle is held to what it says it is (docs/security.md §4): an auditor given an export with records or logs
taken out, counted twice or said to be selected by a filter they do not match gets FAIL, not "ok".

An outside test found `verify-bundle` answered ok for: a whole-log bundle (`filter: null`) rewritten into the
selection form without the approval records; a session's bundle keeping 3 of its 10 records under another
session's name; the same log twice or one index fifty times (inflating the counts); `tree_size: 24.7`. Real SQLite
and PostgreSQL stores, a real ledger, the CLI as an auditor runs it."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from test_audit_cli import build, cli
from test_ledger_store import store_url  # noqa: F401 - shared fixture: SQLite and PostgreSQL

from ledgergate.audit import merkle
from ledgergate.audit.bundle import Filter, export_bundle, verify_bundle
from ledgergate.audit.checkpoint import load_verifier
from ledgergate.store.ledger_store import open_ledger_store

pytestmark = pytest.mark.timeout(180)


def exported(url: str, key: Path, flt: Filter | None = None) -> dict[str, Any]:
    store = open_ledger_store(url)
    try:
        return export_bundle(store, load_verifier(key), flt)
    finally:
        store.close()


def as_selection(doc: dict[str, Any], keep: set[int]) -> dict[str, Any]:
    """A whole-log bundle rewritten into the selection form with only `keep`: every proof genuine."""
    out = copy.deepcopy(doc)
    for entry in out["logs"]:
        n, records = entry["tree_size"], entry.pop("records")
        entry.pop("start")
        hashes = [merkle.leaf_hash(r.encode()) for r in records]
        tree = merkle.ProofTree(lambda start, end, h=hashes: h[start:end])
        for h in hashes:
            tree.append(h)
        entry["checkpoints"], entry["consistency"] = entry["checkpoints"][-1:], []
        entry["indices"] = sorted(keep)
        entry["records"] = [records[i] for i in sorted(keep)]
        entry["inclusion"] = [[base64.b64encode(h).decode() for h in tree.inclusion_proof(i, n)] for i in sorted(keep)]
    return out


async def test_a_bundle_is_held_to_what_it_says_it_holds(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    await build(tmp_path, store_url, n=30, every=10)
    key = tmp_path / "data" / "ledger.key.pub"
    verifier = load_verifier(key)
    whole = exported(store_url, key)
    session = exported(store_url, key, Filter(session="s1"))
    assert verify_bundle(whole, verifier) == [] and verify_bundle(session, verifier) == []

    dropped = as_selection(whole, set(range(30)) - {20, 23})  # filter still null: "whole logs"
    twice = copy.deepcopy(whole)
    twice["logs"] = twice["logs"] * 2
    repeated = copy.deepcopy(session)
    entry = repeated["logs"][0]
    for field in ("indices", "records", "inclusion"):
        entry[field] = [entry[field][0]] * 5
    lying = copy.deepcopy(session)
    lying["filter"]["session"] = "s2"  # the records are s1's
    fractional = copy.deepcopy(whole)
    fractional["logs"][0]["tree_size"] = 30.0
    cases = {"records dropped from a whole-log bundle": (dropped, "holds whole logs (filter: null)"),
             "a log counted twice": (twice, "appears more than once"),
             "an index repeated": (repeated, "increasing order, each once"),
             "a filter the records do not match": (lying, "is not one the bundle's filter selects"),
             "a tree size that is not a whole number": (fractional, "is not a whole number of records")}
    for name, (doc, said) in cases.items():
        problems = verify_bundle(json.loads(json.dumps(doc)), verifier)
        assert problems and said in " ".join(problems), (name, problems)
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(doc))
        code, text = cli("audit", "verify-bundle", str(path), "--public-key", str(key))
        assert code == 1 and "FAIL" in text and "ok" not in text.split(), (name, text)


async def test_the_verdict_says_what_was_proven(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    await build(tmp_path, store_url, n=30, every=10)
    key = tmp_path / "data" / "ledger.key.pub"
    for flt, want in ((None, "log 'replica-a': all 30 records"),
                      (Filter(session="s1"), "log 'replica-a': 10 of 30 records, selected by session 's1'")):
        path = tmp_path / "bundle.json"
        path.write_text(json.dumps(exported(store_url, key, flt)))
        code, text = cli("audit", "verify-bundle", str(path), "--public-key", str(key))
        assert code == 0 and want in " ".join(text.split()), text
        assert (flt is None) == ("not a proof" not in text), text
