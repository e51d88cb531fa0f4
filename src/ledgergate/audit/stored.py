"""A log's stored interior hashes (`ledger_hashes`): reading them as a tree, checking they
cover the log, and backfilling a log written before they existed.

The writer stores MTH of every perfect subtree at the levels `merkle.STRIDE`
divides, in the same transaction as the leaves that complete it
(audit/ledger.py), so for a log of n records the stored levels hold exactly
n >> level hashes each, indices 0 .. (n >> level) - 1. Opening a log checks the
last index of each level (O(log n) index look-ups) and reads the compact range
(at most 2^(STRIDE-1) hashes per set bit of n); nothing is replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ledgergate.audit import merkle
from ledgergate.audit.checkpoint import Checkpoint, NoteError, Verifier, open_checkpoint
from ledgergate.store.ledger_store import LedgerStore

log = logging.getLogger("ledgergate.audit.stored")

MAX_LEVEL = 64


class HashesBeyondRecords(Exception):
    """Stored hashes cover more records than the log holds (records deleted from its tail?)."""


def tree(store: LedgerStore, log_id: str) -> merkle.StoredTree:
    """Proofs and roots of `log_id` read straight from `store` (the caller serialises access)."""
    def read(level: int, indices: Sequence[int]) -> dict[int, bytes]:
        return store.node_hashes(log_id, level, indices)

    def read_many(wants: Mapping[int, Sequence[int]]) -> dict[int, dict[int, bytes]]:
        return store.node_hashes_many(log_id, wants)

    return merkle.StoredTree(read, read_many)


def covers(store: LedgerStore, log_id: str, size: int) -> bool:
    """Whether the stored hashes cover a log of `size` records.

    False when some are missing (a log written before they existed, or by an
    older replica); HashesBeyondRecords when a level holds more than `size`
    records account for, because appending would then collide with them.
    """
    complete = True
    for level in range(merkle.STRIDE, MAX_LEVEL, merkle.STRIDE):
        want = size >> level
        last = store.last_node(log_id, level)
        if last is not None and last >= want:
            raise HashesBeyondRecords(f"log {log_id}: stored hashes at level {level} reach index {last}, "
                                      f"but {size} records make only {want}")
        if want and (last is None or last != want - 1):
            complete = False
        if not want and last is None:
            break
    return complete


def backfill(store: LedgerStore, log_id: str, chunk: int = 50000) -> merkle.CompactRange:
    """Replay the stored leaf hashes once, storing every interior hash that is missing.

    Returns the compact range at the log's size. Raises ValueError when the
    sequence numbers have a gap (the replay would then hash the wrong tree).
    """
    hook = merkle.StoredNodes()
    cr = merkle.CompactRange(on_node=hook)
    for hashes in store.iter_leaf_hashes(log_id, chunk=chunk):
        for h in hashes:
            cr.append(h)
        if hook.nodes:
            store.add_nodes(log_id, hook.nodes)
            hook.nodes = []
    if store.size(log_id) != cr.size:
        raise ValueError(f"log {log_id} has gaps in its sequence numbers")
    cr.on_node = None
    return cr


def open_range(store: LedgerStore, log_id: str) -> merkle.CompactRange:
    """The compact range of `log_id` at its size: from stored hashes, backfilling them first if needed.
    (The ledger opens a log through audit/seals.py, which trusts stored hashes only under a checkpoint.)"""
    size = store.size(log_id)
    if covers(store, log_id, size):
        return tree(store, log_id).compact_range(size)
    return backfill_logged(store, log_id)


def backfill_logged(store: LedgerStore, log_id: str) -> merkle.CompactRange:
    """`backfill`, saying so in the log: it runs once per log, in time proportional to its size."""
    log.warning("log %s: %d records have no stored interior hashes (written before they existed); "
                "backfilling them once by replaying the leaf hashes", log_id, store.size(log_id))
    cr = backfill(store, log_id)
    log.warning("log %s: stored interior hashes backfilled for %d records", log_id, cr.size)
    return cr


# --- evidence checked before it is handed out -------------------------------
#
# Proofs and tiles are read from the stored hashes because that is fast (a
# proof is O(log n) reads); but a stored hash is a row anyone with write access
# can change, and nothing recomputes it on the way out. So everything built
# from them here is checked against what it claims before it is returned: a
# proof or a tile is folded into a root at its size, and that root is linked by
# a consistency proof (read in the same round trip) to an anchor, the log's
# latest signed checkpoint, or, for a size beyond it, the running writer's
# root (which is itself linked to the signed checkpoint). That costs about
# log2(n) more hashes read and folded. A check that fails does not hand out
# the evidence: `Unverifiable` names the cause found by `diagnose`, a bounded
# search among the hashes that were read (never a replay of the log).


class Unverifiable(Exception):
    """Evidence read from the store does not verify against its anchor; the text names the cause found."""


class NotCovered(Exception):
    """No anchor covers the size asked for (no signed checkpoint reaches it yet): nothing to check against."""


@dataclass(frozen=True)
class Anchor:
    """A root the evidence must lead to: a signed checkpoint's, or the running writer's (not yet signed)."""

    size: int
    root: bytes
    signed: bool

    def name(self) -> str:
        return (f"the signed checkpoint at size {self.size}" if self.signed
                else f"the writer's root at size {self.size}")


class SignedAnchors:
    """The latest signed checkpoint of a log as an Anchor: its note opened with the log key, once per
    note (an Ed25519 verification is the larger part of a check's CPU; notes change once a checkpoint)."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self._opened: dict[str, Checkpoint] = {}

    def latest(self, store: LedgerStore, log_id: str) -> Anchor | None:
        row = store.latest_checkpoint(log_id)
        if row is None:
            return None
        cp = self._opened.get(row.note)
        if cp is None:
            try:
                cp = open_checkpoint(row.note, self.verifier)
            except NoteError as exc:
                raise Unverifiable(f"log {log_id}: its latest stored checkpoint (size {row.size}) does not verify "
                                   f"({exc}); run `ledgergate audit verify`") from None
            if cp.origin != f"ledgergate/{log_id}":
                raise Unverifiable(f"log {log_id}: its latest stored checkpoint is for origin {cp.origin!r}; "
                                   "run `ledgergate audit verify`")
            if len(self._opened) >= 256:
                self._opened.clear()
            self._opened[row.note] = cp
        return Anchor(cp.size, cp.root, True)


#: (from size, the anchor it starts at or None for the root under test, the anchor it must lead to)
Link = tuple[int, "Anchor | None", Anchor]


def _links(size: int, anchors: Sequence[Anchor]) -> list[Link]:
    """The consistency checks (from size, to anchor) that tie a root at `size` to the anchors.

    A size the signed checkpoint covers is tied to it; a larger one to the writer's root, which is
    tied to the signed checkpoint in turn. Raises Unverifiable when nothing covers `size`."""
    signed = next((a for a in anchors if a.signed), None)
    head = next((a for a in anchors if not a.signed), None)
    if signed is not None and size <= signed.size:
        return [(size, None, signed)]
    if head is not None and size <= head.size:
        return [(size, None, head)] + ([(signed.size, signed, head)] if signed is not None else [])
    if not anchors:
        raise NotCovered("the log has no signed checkpoint yet")
    raise NotCovered(f"size {size} is beyond the log's latest signed checkpoint (size {max(a.size for a in anchors)})")


def _ranges_of(links: Sequence[Link]) -> list[tuple[int, int]]:
    return [r for a, _, anchor in links for r in merkle.consistency_path(a, anchor.size)]


def _linked(root: bytes, links: Sequence[Link], hashes: Sequence[bytes]) -> bool:
    """Whether `root` (and each anchor a link starts at) leads to each link's anchor."""
    k = 0
    for a, start, anchor in links:
        n = len(merkle.consistency_path(a, anchor.size))
        proof, k = hashes[k:k + n], k + n
        if not merkle.verify_consistency(a, anchor.size, root if start is None else start.root, anchor.root, proof):
            return False
    return True


def _read(store: LedgerStore, log_id: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    try:
        return tree(store, log_id).range_hashes(ranges)
    except LookupError as exc:
        raise _refuse(store, log_id, ranges, (), str(exc)) from None


def _refuse(store: LedgerStore, log_id: str, ranges: Sequence[tuple[int, int]],
            extra: Sequence[tuple[int, int]] = (), what: str = "") -> Unverifiable:
    cause = diagnose(store, log_id, _suspects(ranges) | set(extra), what)
    return Unverifiable(f"log {log_id}: {cause}; run `ledgergate audit verify`")


def checked_inclusion(store: LedgerStore, log_id: str, index: int, size: int,
                      anchors: Sequence[Anchor]) -> tuple[list[bytes], bytes]:
    """RFC 9162 inclusion proof of record `index` in the tree of `size`, and the record's bytes,
    both checked: the proof leads from the record's recomputed leaf hash to a root that the
    anchors vouch for. One round trip for the hashes; Unverifiable otherwise."""
    links = _links(size, anchors)
    path = merkle.inclusion_path(index, size)
    rows = store.rows(log_id, index, index + 1)
    if not rows:
        raise _refuse(store, log_id, [], [(0, index)])
    hashes = _read(store, log_id, path + _ranges_of(links))
    proof = hashes[:len(path)]
    root = merkle.root_from_inclusion_proof(index, size, merkle.leaf_hash(rows[0].record), proof)
    if not _linked(root, links, hashes[len(path):]):
        raise _refuse(store, log_id, path + _ranges_of(links), [(0, index)],
                      f"the proof of record {index} at size {size} does not lead to {links[0][2].name()}")
    return proof, rows[0].record


def checked_consistency(store: LedgerStore, log_id: str, old: int, new: int,
                        anchors: Sequence[Anchor]) -> list[bytes]:
    """RFC 9162 consistency proof from `old` to `new`, checked: it leads from the stored root at
    `old` to the stored root at `new`, and that one is tied to the anchors."""
    links = _links(new, anchors)
    path = merkle.consistency_path(old, new)
    roots = [(0, s) for s in (old, new) if s]
    ranges = path + roots + _ranges_of(links)
    hashes = _read(store, log_id, ranges)
    proof = hashes[:len(path)]
    got = dict(zip((s for _, s in roots), hashes[len(path):len(path) + len(roots)], strict=True))
    got[0] = merkle.EMPTY_ROOT
    if not (merkle.verify_consistency(old, new, got[old], got[new], proof)
            and _linked(got[new], links, hashes[len(path) + len(roots):])):
        raise _refuse(store, log_id, ranges, (),
                      f"the consistency proof {old} -> {new} does not lead to {links[0][2].name()}")
    return proof


def check_hash_run(store: LedgerStore, log_id: str, level: int, first: int, hashes: Sequence[bytes],
                   anchors: Sequence[Anchor], what: str) -> None:
    """Check consecutive perfect-subtree hashes at tree `level`, indices first.., (a tlog tile's, or the
    leaf hashes recomputed from an entry bundle's records) against the anchors: with the stored
    left edge they fold into the root of the prefix they end, which is linked to an anchor."""
    start, end = first << level, (first + len(hashes)) << level
    links = _links(end, anchors)
    left = [(i << lv, (i + 1) << lv) for lv, i in merkle.edge_nodes(start)]
    read = _read(store, log_id, left + _ranges_of(links))
    parts = list(read[:len(left)])
    for lv, i in merkle.subtrees(start, end):
        lo = (i << (lv - level)) - first
        group = list(hashes[lo:lo + (1 << (lv - level))])
        while len(group) > 1:
            group = [merkle.node_hash(group[j], group[j + 1]) for j in range(0, len(group), 2)]
        parts.append(group[0])
    root = parts[-1]
    for h in reversed(parts[:-1]):
        root = merkle.node_hash(h, root)
    if not _linked(root, links, read[len(left):]):
        # suspects: what was read, the run's own hashes, and the stored hashes made of them
        own = [(level, first + j) for j in range(len(hashes))]
        above = [(level + merkle.STRIDE, i) for i in range(first >> merkle.STRIDE, (first + len(hashes)) >> merkle.STRIDE)]
        raise _refuse(store, log_id, left + _ranges_of(links), own + above,
                      f"{what} does not lead to {links[0][2].name()}")


# --- naming the cause -----------------------------------------------------------

#: how many stored hashes a diagnosis may compare with their children before it gives up naming one
DIAGNOSE_BUDGET = 4096


def _suspects(ranges: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    """The stored hashes (level 0: leaf hashes) that reading `ranges` from a StoredTree reads."""
    out: set[tuple[int, int]] = set()
    for a, b in ranges:
        for level, index in merkle.subtrees(a, b):
            shift = level % merkle.STRIDE
            out.update((level - shift, i) for i in range(index << shift, (index + 1) << shift))
    return out


def _fold(hs: list[bytes]) -> bytes:
    while len(hs) > 1:
        hs = [merkle.node_hash(hs[i], hs[i + 1]) for i in range(0, len(hs), 2)]
    return hs[0]


def diagnose(store: LedgerStore, log_id: str, suspects: set[tuple[int, int]], what: str = "") -> str:
    """The cause of evidence that did not verify, looked for among the hashes it was built from.

    Records first (a missing row, bytes that do not hash to their stored leaf hash), then each
    stored hash against the hashes one stored level below it (for level STRIDE: the leaf hashes
    recomputed from the records), lowest level first, descending into a mismatch to name the
    lowest stored hash that disagrees with what it was made of. Bounded (`DIAGNOSE_BUDGET`);
    `audit verify` is the full account."""
    budget = [DIAGNOSE_BUDGET]
    leaves = sorted(i for lv, i in suspects if lv == 0)
    for i in range(0, len(leaves), 500):
        part = leaves[i:i + 500]
        have: dict[int, tuple[bytes, bytes]] = {}
        for lo in _runs(part):
            for r in store.rows(log_id, lo[0], lo[1]):
                have[r.seq] = (r.leaf_hash, r.record)
        for seq in part:
            if seq not in have:
                return f"record {seq} is missing from the store (deleted)"
            if merkle.leaf_hash(have[seq][1]) != have[seq][0]:
                return f"record {seq}'s bytes do not match its stored leaf hash (record or leaf hash altered)"
    for level in sorted({lv for lv, _ in suspects if lv}):
        for index in sorted(i for lv, i in suspects if lv == level):
            problem = _node_problem(store, log_id, level, index, budget)
            if problem:
                return problem
            if budget[0] <= 0:
                return (f"{what or 'the evidence does not verify'}, and no stored hash was found to differ "
                        "within the diagnosis budget")
    tail = f"{what}: " if what else ""
    return (f"{tail}its stored hashes agree with its records, so the records are not those that were signed "
            "(records altered, or records and stored hashes rewritten together)")


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _node_problem(store: LedgerStore, log_id: str, level: int, index: int, budget: list[int]) -> str | None:
    budget[0] -= 1
    width = 1 << merkle.STRIDE
    below = level - merkle.STRIDE
    lo, hi = index * width, (index + 1) * width
    stored_hash = store.node_hashes(log_id, level, [index]).get(index)
    if stored_hash is None:
        return f"the store's stored hash at level {level} index {index} is missing (deleted)"
    if below == 0:
        rows = store.rows(log_id, lo, hi)
        seqs = [r.seq for r in rows]
        if seqs != list(range(lo, hi)):
            gone = next(s for s in range(lo, hi) if s not in set(seqs))
            return f"record {gone} is missing from the store (deleted)"
        children = [merkle.leaf_hash(r.record) for r in rows]
    else:
        got = store.node_hashes(log_id, below, list(range(lo, hi)))
        if len(got) != width:
            gone = next(i for i in range(lo, hi) if i not in got)
            return f"the store's stored hash at level {below} index {gone} is missing (deleted)"
        children = [got[i] for i in range(lo, hi)]
    if _fold(children) == stored_hash:
        return None
    if below and budget[0] > 0:
        for child in range(lo, hi):
            problem = _node_problem(store, log_id, below, child, budget)
            if problem:
                return problem
    return (f"the store's stored hashes do not match its records at level {level} index {index} "
            f"(records {index << level}..{((index + 1) << level) - 1})")
