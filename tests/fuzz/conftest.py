"""Fuzz tests: hypothesis, with example counts sized so the whole directory runs in well under a
minute in CI. `LEDGERGATE_FUZZ_SCALE=50 pytest tests/fuzz` runs fifty times as many examples."""

from __future__ import annotations

import os


def examples(n: int) -> int:
    """`n` examples, times LEDGERGATE_FUZZ_SCALE (default 1) for a deeper local run."""
    return max(1, int(n * float(os.environ.get("LEDGERGATE_FUZZ_SCALE", "1"))))
