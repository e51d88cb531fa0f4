"""Evidence bundles: one JSON document an auditor verifies offline (DESIGN.md "The ledger").

    {"format": "ledgergate-evidence/1", "created": RFC3339, "verifier_key": "<name>+<id>+<key>",
     "filter": {"session": ..., "since": ..., "until": ...} | null,
     "logs": [{"log": id, "origin": "ledgergate/<id>", "tree_size": N,
               "checkpoints": [signed note text, ... by increasing size; the last is at N],
               "consistency": [{"from": a, "to": b, "proof": [b64, ...]}, ...],   # between consecutive checkpoints
               "start": 0, "records": [canonical JSON string, ...]                # unfiltered: leaves 0..N-1
               | "indices": [i, ...], "records": [...], "inclusion": [[b64, ...], ...]}]}  # filtered

Records are the exact strings that were hashed (leaf = SHA-256(0x00 ‖ UTF-8
bytes)), so any RFC 9162 implementation can recompute the roots of an
unfiltered bundle; a filtered one proves each record with an inclusion proof
against the last checkpoint.

Nothing is written unchecked: `export_bundle` builds each log's entry (its
proofs read from the stored interior hashes, which are fast but only rows),
then runs on it the very check `verify_bundle` runs offline, and refuses with
`ExportRefused` when it fails, naming the cause that `audit verify`'s
recompute finds (a stored hash that does not match the records, a record
missing or altered, a tail truncated). A bundle that leaves here verifies.
"""

from __future__ import annotations

import base64
import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ledgergate.audit import merkle, stored
from ledgergate.audit.checkpoint import NoteError, Verifier, open_checkpoint
from ledgergate.invisible import escaped
from ledgergate.store.ledger_store import LedgerStore, StoreError

FORMAT = "ledgergate-evidence/1"
log = logging.getLogger("ledgergate.audit.bundle")


class ExportRefused(StoreError):
    """No bundle: what the store holds for a log does not verify (the text names the cause and the log).

    A StoreError, so a caller that reports store failures reports this too; it is the store's
    content, not its reachability, that is wrong, and `audit verify` gives the full account."""


def _b64(hs: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hs]


def _unb64(xs: Any) -> list[bytes]:
    if not isinstance(xs, list):
        raise ValueError("proof must be a list")
    return [base64.b64decode(x, validate=True) for x in xs]


def normalize_time(value: str | None) -> str | None:
    """Any ISO 8601 time → the ledger's RFC 3339 UTC microsecond form, so strings compare in time order."""
    if value is None:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Filter:
    session: str | None = None
    since: str | None = None
    until: str | None = None

    @property
    def active(self) -> bool:
        return any((self.session, self.since, self.until))

    def match(self, doc: dict[str, Any]) -> bool:
        if self.session is not None and doc.get("session") != self.session:
            return False
        t = doc.get("time", "")
        if self.since is not None and t < self.since:
            return False
        return not (self.until is not None and t > self.until)


def export_bundle(store: LedgerStore, verifier: Verifier, flt: Filter | None = None,
                  log_ids: list[str] | None = None) -> dict[str, Any]:
    """Everything up to each log's latest stored checkpoint."""
    flt = flt or Filter()
    logs = []
    for log_id, origin in store.logs():
        if log_ids is not None and log_id not in log_ids:
            continue
        cps = store.checkpoints(log_id)
        if not cps:
            continue
        try:
            entry = _log_entry(store, log_id, origin, cps, flt)
            problems = _verify_log(entry, verifier, flt if flt.active else None)
        except (LookupError, ValueError, KeyError) as exc:  # a proof the store cannot give: hashes or rows gone
            problems = [f"log {log_id}: {exc}"]
        if problems:
            raise _refused(store, log_id, origin, verifier, problems[0])
        logs.append(entry)
    return {
        "format": FORMAT,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "verifier_key": str(verifier),
        "filter": {"session": flt.session, "since": flt.since, "until": flt.until} if flt.active else None,
        "logs": logs,
    }


def _refused(store: LedgerStore, log_id: str, origin: str, verifier: Verifier, found: str) -> ExportRefused:
    """The cause of a log entry that does not verify, from `audit verify`'s recompute of the log."""
    from ledgergate.audit.verify import verify_log

    rep = verify_log(store, log_id, origin, verifier)
    causes = [f"the store's {p}" if p.startswith("stored hash") else p for p in rep.problems[:2]]
    if not causes:  # the store verifies, yet the entry made from it did not: say what failed
        causes = [found.removeprefix(f"log {log_id}: ")]
    message = f"log {log_id}: no bundle written: {'; '.join(causes)}; run `ledgergate audit verify`"
    log.error("%s", message)
    return ExportRefused(message)


def _log_entry(store: LedgerStore, log_id: str, origin: str, cps: list[Any], flt: Filter) -> dict[str, Any]:
    n = cps[-1].size
    tree = _proof_source(store, log_id, n)
    entry: dict[str, Any] = {"log": log_id, "origin": origin, "tree_size": n}
    if flt.active:
        entry["checkpoints"] = [cps[-1].note]
        entry["consistency"] = []
        indices, records, proofs = [], [], []
        for rows in store.iter_leaves(log_id, 0, n):
            for seq, _, record in rows:
                record = bytes(record)
                if flt.match(orjson.loads(record)):
                    indices.append(int(seq))
                    records.append(record.decode())
                    proofs.append(_b64(tree.inclusion_proof(int(seq), n)))
        entry.update(indices=indices, records=records, inclusion=proofs)
    else:
        entry["checkpoints"] = [c.note for c in cps]
        entry["consistency"] = [
            {"from": a.size, "to": b.size, "proof": _b64(tree.consistency_proof(a.size, b.size))}
            for a, b in zip(cps, cps[1:], strict=False)
        ]
        entry["start"] = 0
        entry["records"] = [bytes(r).decode() for chunk in store.iter_leaves(log_id, 0, n) for _, _, r in chunk]
    return entry


def _proof_source(store: LedgerStore, log_id: str, n: int) -> merkle.StoredTree | merkle.ProofTree:
    """Proofs from the stored interior hashes; a log written before they existed (not yet opened
    by a gateway that backfills them) is replayed from its leaf hashes instead."""
    try:
        if stored.covers(store, log_id, store.size(log_id)):
            return stored.tree(store, log_id)
    except stored.HashesBeyondRecords:
        pass  # the log lost records; replay what is there, and let the proofs fail against the checkpoints
    tree = merkle.ProofTree(functools.partial(store.leaf_hashes, log_id))
    for chunk in store.iter_leaf_hashes(log_id):
        for h in chunk[: max(0, n - tree.size)]:
            tree.append(h)
        if tree.size >= n:
            break
    return tree


def dump_bundle(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


#: the most of one value from a bundle a problem quotes
_QUOTED_CHARS = 80


def _quoted(value: Any) -> str:
    """A value from a bundle as a problem quotes it. A bundle comes from outside (that is its point), and what
    `verify-bundle` prints goes to a terminal: a field holding an escape sequence could rewrite the screen
    (print a green "ok" over a failure), a hidden character could make two names look alike, and a megabyte
    could bury the verdict. So: short, every invisible or control character shown as its escape."""
    return f"'{_shown(value if isinstance(value, str) else repr(value))}'"


def _shown(text: str) -> str:
    """`text` bounded, its invisible and control characters escaped (an error's words may quote the bundle)."""
    return escaped(text, _QUOTED_CHARS)


def verify_bundle(doc: Any, verifier: Verifier) -> list[str]:
    """Problems found (empty means the bundle verifies). Needs no database and no config. Every value from the
    bundle a problem names is `_quoted`."""
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return [f"not a {FORMAT} bundle"]
    if doc.get("verifier_key") != str(verifier):
        problems.append(f"bundle names verifier key {_quoted(doc.get('verifier_key'))}, not the given {verifier}")
    logs = doc.get("logs")
    if not isinstance(logs, list) or not logs:
        return [*problems, "bundle holds no logs"]
    flt, problem = _claimed_filter(doc.get("filter"))
    if problem:
        return [*problems, problem]
    seen: set[Any] = set()
    for entry in logs:
        name = entry.get("log") if isinstance(entry, dict) else None
        if isinstance(name, str) and name in seen:  # counted twice, a log would look larger than it is
            problems.append(f"log {_quoted(name)}: appears more than once")
            continue
        seen.add(name)
        try:
            problems.extend(_verify_log(entry, verifier, flt))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"log {_quoted(name) if name is not None else '?'}: malformed "
                            f"({type(exc).__name__}: {_shown(str(exc))})")
    return problems


def _claimed_filter(value: Any) -> tuple[Filter | None, str | None]:
    """The bundle's `filter` as a Filter (None: the bundle claims whole logs), or the problem with it. The claim
    is what every log entry is then held to: a bundle saying it is whole must hold every record, and one saying
    it is a selection may hold only records the selection matches."""
    if value is None:
        return None, None
    if not isinstance(value, dict) or not set(value) <= {"session", "since", "until"} or not all(
            v is None or isinstance(v, str) for v in value.values()):
        return None, f"filter {_quoted(value)} is not a filter (session, since, until: text or null)"
    try:
        flt = Filter(value.get("session"), normalize_time(value.get("since")), normalize_time(value.get("until")))
    except ValueError:
        return None, f"filter {_quoted(value)}: since or until is not a time"
    if not flt.active:
        return None, "filter names nothing (a bundle of whole logs says filter: null)"
    return flt, None


def describe(doc: dict[str, Any]) -> list[str]:
    """What a bundle that verified proves, log by log: whole logs, or a selection, which inclusion proofs show to
    be in the log but cannot show to be every record the selection matches."""
    flt = doc.get("filter")
    out = []
    for entry in doc["logs"]:
        where, n, k = f"log {_quoted(entry['log'])}", entry["tree_size"], len(entry["records"])
        if flt is None:
            out.append(f"{where}: all {n} records")
        else:
            said = ", ".join(f"{key} {_quoted(v)}" for key, v in flt.items() if v is not None)
            out.append(f"{where}: {k} of {n} records, selected by {said}; each is proven in the log, but that they are "
                       f"all the records the selection matches is the exporter's word, not a proof")
    return out


def _verify_log(entry: dict[str, Any], verifier: Verifier, flt: Filter | None = None) -> list[str]:
    log_id, origin, n = entry["log"], entry["origin"], entry["tree_size"]
    where = f"log {_quoted(log_id)}"
    if type(n) is not int or n < 0:
        return [f"{where}: tree_size {_quoted(n)} is not a whole number of records"]
    if origin != f"ledgergate/{log_id}":
        return [f"{where}: origin {_quoted(origin)} does not belong to the log"]
    cps = []
    for i, note in enumerate(entry["checkpoints"]):
        try:
            cp = open_checkpoint(note, verifier)
        except NoteError as exc:
            return [f"{where}: checkpoint {i}: {_shown(str(exc))}"]
        if cp.origin != origin:
            return [f"{where}: checkpoint {i} is for origin {_quoted(cp.origin)}"]
        cps.append(cp)
    if not cps or cps[-1].size != n or any(a.size >= b.size for a, b in zip(cps, cps[1:], strict=False)):
        return [f"{where}: checkpoints must increase in size and end at tree_size {n}"]
    cons = entry.get("consistency", [])
    if len(cons) != len(cps) - 1:
        return [f"{where}: expected {len(cps) - 1} consistency proofs, found {len(cons)}"]
    for a, b, c in zip(cps, cps[1:], cons, strict=False):
        if (c["from"], c["to"]) != (a.size, b.size) or not merkle.verify_consistency(
                a.size, b.size, a.root, b.root, _unb64(c["proof"])):
            return [f"{where}: checkpoint at size {a.size} is not consistent with checkpoint at size {b.size}"]
    records = entry["records"]
    if ("indices" in entry) != (flt is not None):
        return [f"{where}: the bundle says it holds " + ("a selection of records (filter), but this log's entry holds "
                "whole-log records" if flt is not None else "whole logs (filter: null), but this log's entry holds "
                "a selection of records")]
    if "indices" not in entry:
        if entry.get("start") != 0 or len(records) != n:
            return [f"{where}: an unfiltered bundle must hold records 0..{n - 1}, found {len(records)}"]
        want = {cp.size: cp.root for cp in cps}
        cr = merkle.CompactRange()
        for i, rec in enumerate(records):
            problem = _record_problem(log_id, i, rec)
            if problem:
                return [f"{where}: {problem}"]
            cr.append(merkle.leaf_hash(rec.encode()))
            if cr.size in want and cr.root() != want[cr.size]:
                return [f"{where}: records 0..{cr.size - 1} do not hash to the signed checkpoint at size {cr.size}"
                        " (a record was changed, removed, added or moved)"]
        return []
    indices, proofs = entry["indices"], entry["inclusion"]
    if not len(indices) == len(records) == len(proofs):
        return [f"{where}: indices, records and inclusion proofs differ in number"]
    if any(type(i) is not int for i in indices) or any(a >= b for a, b in zip(indices, indices[1:], strict=False)):
        return [f"{where}: indices must be whole numbers in increasing order, each once"]
    assert flt is not None
    root = cps[-1].root
    for idx, rec, proof in zip(indices, records, proofs, strict=True):
        problem = _record_problem(log_id, idx, rec)
        if problem:
            return [f"{where}: {problem}"]
        if not flt.match(orjson.loads(rec)):
            return [f"{where}: record {_quoted(idx)} is not one the bundle's filter selects"]
        if not merkle.verify_inclusion(int(idx), n, merkle.leaf_hash(rec.encode()), _unb64(proof), root):
            return [f"{where}: record {_quoted(idx)}: inclusion proof does not lead to the signed root at size {n}"
                    " (record or proof altered)"]
    return []


def _record_problem(log_id: str, index: int, record: Any) -> str | None:
    at = _quoted(index)
    if not isinstance(record, str):
        return f"record {at}: not a string"
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError:
        return f"record {at}: not JSON"
    if not isinstance(doc, dict) or doc.get("seq") != index or doc.get("log") != log_id:
        return f"record {at}: does not say log {_quoted(log_id)} seq {at}"
    return None
