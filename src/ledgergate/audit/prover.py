"""Proofs of stored records against each log's latest signed checkpoint.

Any log in the store can be proven (the gateway's, another replica's, the
CLI's), so this reads the store rather than one running ledger's memory: the
leaf hashes up to the checkpointed size go through a `ProofTree` once, then
each record's proof is a few range hashes. Every proof made here is verified
with the log key before it is handed out (`proof.verify`), so "included in
the latest signed checkpoint" is checked, never assumed: a record whose bytes
were changed after the fact gets a ProofError, not a proof.

Blocking calls on a `LedgerStore` (run them in a worker thread).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ledgergate.audit import merkle, proof
from ledgergate.audit.checkpoint import Checkpoint, NoteError, Verifier, open_checkpoint
from ledgergate.store.ledger_store import CheckpointRow, LedgerStore


@dataclass
class LogProver:
    """Proves records of one log against its latest stored checkpoint."""

    store: LedgerStore
    log_id: str
    verifier: Verifier
    witness_notes: tuple[str, ...] = ()
    checkpoint: CheckpointRow | None = None
    _tree: merkle.ProofTree | None = None

    @classmethod
    def open(cls, store: LedgerStore, log_id: str, verifier: Verifier,
             witness_notes: list[str] | tuple[str, ...] = ()) -> LogProver:
        prover = cls(store, log_id, verifier, tuple(witness_notes), store.latest_checkpoint(log_id))
        return prover

    @property
    def size(self) -> int:
        return self.checkpoint.size if self.checkpoint is not None else 0

    def _proof_tree(self) -> merkle.ProofTree:
        if self._tree is None:
            tree = merkle.ProofTree(functools.partial(self.store.leaf_hashes, self.log_id))
            for chunk in self.store.iter_leaf_hashes(self.log_id):
                for h in chunk[: max(0, self.size - tree.size)]:
                    tree.append(h)
                if tree.size >= self.size:
                    break
            if tree.size != self.size:
                raise proof.ProofError(f"log {self.log_id} holds {tree.size} records, fewer than its signed "
                                       f"checkpoint's {self.size} (records deleted)")
            self._tree = tree
        return self._tree

    def covers(self, index: int) -> bool:
        return 0 <= index < self.size

    def prove(self, index: int) -> str:
        """The verified tlog-proof text of record `index`; ProofError if there is none or it does not verify."""
        if self.checkpoint is None:
            raise proof.ProofError(f"log {self.log_id} has no signed checkpoint yet")
        if not self.covers(index):
            raise proof.ProofError(f"record {index} is not in log {self.log_id}'s latest signed checkpoint "
                                   f"(size {self.size}); it will be in the next one")
        try:
            cp: Checkpoint = open_checkpoint(self.checkpoint.note, self.verifier)
        except NoteError as exc:
            raise proof.ProofError(f"log {self.log_id}'s latest checkpoint does not verify: {exc}") from None
        rows = self.store.rows(self.log_id, index, index + 1)
        if not rows:
            raise proof.ProofError(f"record {index} of log {self.log_id} is missing from the store")
        tree = self._proof_tree()
        if tree.root_at(cp.size) != cp.root:
            raise proof.ProofError(f"log {self.log_id}'s stored leaf hashes do not match its signed checkpoint "
                                   f"at size {cp.size} (records altered)")
        note = proof.add_cosignatures(self.checkpoint.note, list(self.witness_notes))
        text = proof.encode(proof.TlogProof(index, tuple(tree.inclusion_proof(index, cp.size)), note,
                                            rows[0].record))
        proof.verify(text, self.verifier)  # raises when the stored record is not the one that was hashed
        return text


def prove_record(store: LedgerStore, log_id: str, index: int, verifier: Verifier,
                 witness_notes: list[str] | tuple[str, ...] = ()) -> str:
    return LogProver.open(store, log_id, verifier, witness_notes).prove(index)


__all__ = ["LogProver", "prove_record"]
