"""Record seals (audit/seals.py): the writer's fast HMAC is RFC 2104 HMAC-SHA256, and a seal is bound to
its log, its seq and its leaf hash."""

from __future__ import annotations

import hmac
import struct

from ledgergate.audit import canonical
from ledgergate.audit.seals import PURPOSE, Sealer

KEY = bytes(range(32))


def test_a_seal_is_hmac_sha256_of_log_seq_and_leaf_hash_under_the_record_seal_key() -> None:
    for log_id, seq, leaf in (("gw", 0, bytes(32)), ("replica-ä", 2**63 - 1, b"\xff" * 32), ("", 7, b"\x01" * 32)):
        name = log_id.encode()
        message = b"ledgergate/record-seal/v1\x00" + struct.pack(">I", len(name)) + name + struct.pack(">Q", seq) + leaf
        want = hmac.digest(canonical.derive_key(KEY, PURPOSE), message, "sha256")
        assert Sealer(KEY, log_id).seal(seq, leaf) == want


def test_a_seal_does_not_carry_to_another_log_seq_leaf_or_key() -> None:
    sealer, leaf = Sealer(KEY, "gw"), bytes(32)
    seal = sealer.seal(5, leaf)
    assert sealer.check(5, leaf, seal)
    assert not sealer.check(6, leaf, seal)
    assert not sealer.check(5, b"\x01" + leaf[1:], seal)
    assert not Sealer(KEY, "gw2").check(5, leaf, seal)
    assert not Sealer(bytes(32), "gw").check(5, leaf, seal)
    assert not sealer.check(5, leaf, seal[:-1])
    assert sealer.seal(5, leaf) == seal  # the precomputed state is copied, never consumed
