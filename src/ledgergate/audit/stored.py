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

from ledgergate.audit import merkle
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
    """The writer's compact range for `log_id`: from stored hashes, backfilling them first if needed."""
    size = store.size(log_id)
    if covers(store, log_id, size):
        return tree(store, log_id).compact_range(size)
    log.warning("log %s: %d records have no stored interior hashes (written before they existed); "
                "backfilling them once by replaying the leaf hashes", log_id, size)
    cr = backfill(store, log_id)
    log.warning("log %s: stored interior hashes backfilled for %d records", log_id, cr.size)
    return cr
