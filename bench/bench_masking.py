"""Masking throughput: typical 2 KB tool results and 1 MB of dense PII.

Run:  .venv/bin/python bench/bench_masking.py [--quick]

Reference point (ANCHORS.md): hoop.dev's pattern engine masks 1 MB of dense PII
in 1.5 s (Presidio: 159 s). The data here is synthetic but valid (Luhn cards,
well-formed SSNs, ABA checksums, mod-97 IBANs), so every detector really fires
and every validator really runs. Results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from ledgergate.masking.engine import Masker
from ledgergate.masking.settings import MaskingSettings

STANDARD = ["US_SSN", "CREDIT_CARD", "US_BANK_ACCOUNT", "ABA_ROUTING", "IBAN", "EMAIL", "PHONE", "SECRET"]


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch)
            if i % 2:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        if total % 10 == 0:
            return digits
    raise AssertionError


def _aba(rng: random.Random) -> str:
    first8 = f"{rng.randint(1, 12):02d}" + "".join(rng.choice("0123456789") for _ in range(6))
    partial = sum(w * int(d) for w, d in zip((3, 7, 1, 3, 7, 1, 3, 7), first8))
    return first8 + str((10 - partial % 10) % 10)


def _iban_de(rng: random.Random) -> str:
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    numeric = int("".join(str(int(c, 36)) for c in bban + "DE00"))
    compact = f"DE{98 - numeric % 97:02d}{bban}"
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def pii_record(rng: random.Random, i: int) -> dict[str, Any]:
    """One customer record where nearly every field is sensitive (the 'dense PII' case)."""
    card = _luhn_complete("4" + "".join(rng.choice("0123456789") for _ in range(14)))
    ssn = f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    phone = f"({rng.randint(201, 989)}) 555-{rng.randint(100, 9999):04d}"
    acct = "".join(rng.choice("0123456789") for _ in range(12))
    return {
        "id": f"cus_{i:06d}",
        "name": f"Customer {i}",
        "ssn": ssn,
        "email": f"customer{i}@example.com",
        "phone": phone,
        "card_number": card,
        "account_number": acct,
        "routing_number": _aba(rng),
        "iban": _iban_de(rng),
        "note": (f"Verified SSN {ssn} by phone {phone}; card {card[:4]} {card[4:8]} {card[8:12]} {card[12:]} "
                 f"on file, mail customer{i}@example.org, account number {acct}."),
    }


def dense_pii(size: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    total = 2
    i = 0
    while total < size:
        rec = pii_record(rng, i)
        total += len(json.dumps(rec)) + 1
        out.append(rec)
        i += 1
    return out


def typical_clean_result(seed: int = 3, rows: int = 6) -> dict[str, Any]:
    """A ~2 KB `tools/call` result with nothing sensitive: ids, dates, amounts, prose.

    Like real MCP servers it carries the data twice: as JSON text in `content` and
    as `structuredContent`.
    """
    rng = random.Random(seed)
    rows = [{"id": f"txn_{rng.randrange(10**8):08d}", "date": f"2026-0{rng.randint(1, 9)}-{rng.randint(10, 28)}",
             "amount": round(rng.uniform(-900, 900), 2), "currency": "USD",
             "description": rng.choice(["Coffee shop", "Payroll deposit", "Utility bill", "Grocery store",
                                        "Transfer to savings", "ATM withdrawal"]),
             "status": "posted"} for _ in range(rows)]
    structured = {"transactions": rows, "page": 1, "has_more": False}
    return {"content": [{"type": "text", "text": json.dumps(structured)}], "structuredContent": structured,
            "isError": False}


def typical_dirty_result(seed: int = 5) -> dict[str, Any]:
    """A ~2 KB `tools/call` result for one customer: a handful of findings."""
    rng = random.Random(seed)
    rec = pii_record(rng, 1)
    clean = typical_clean_result(seed, rows=3)
    structured = {"customer": rec, "transactions": clean["structuredContent"]["transactions"]}
    return {"content": [{"type": "text", "text": json.dumps(structured)}], "structuredContent": structured,
            "isError": False}


def _time(fn: Callable[[], Any], min_time: float) -> tuple[float, int]:
    """Median seconds per call over repeated batches lasting at least `min_time` in total."""
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > min_time / 10:
            break
        n *= 2
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    args = ap.parse_args()
    min_time = 0.5 if args.quick else 2.0
    masker = Masker.from_settings(MaskingSettings.model_validate({
        "profiles": {"standard": {"detectors": STANDARD, "operator": "partial"},
                     "pseudo": {"detectors": STANDARD, "operator": "pseudonym"}},
        "pseudonym_key": "bench-key-0123456789abcdef",
    }))
    clean = typical_clean_result()
    clean_large = typical_clean_result(rows=12)
    dirty = typical_dirty_result()
    mb_struct = dense_pii(1_000_000)
    mb_text = json.dumps(mb_struct)
    mb_as_tool = {"content": [{"type": "text", "text": mb_text}]}
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    print(f"clean result: {len(json.dumps(clean))} bytes JSON; dirty: {len(json.dumps(dirty))} bytes; "
          f"dense: {len(mb_text)} bytes, {len(mb_struct)} records")
    for label, value, profile in (
        ("2 KB clean tools/call result, standard profile", clean, "standard"),
        ("2 KB clean tools/call result, ledger profile", clean, None),
        ("4 KB clean tools/call result (12 rows), standard", clean_large, "standard"),
        ("2 KB result with one customer's PII, standard", dirty, "standard"),
        ("2 KB result with one customer's PII, ledger", dirty, None),
    ):
        sec, n = _time(lambda v=value, p=profile: masker.mask(v, p), min_time)
        print(f"{label:58s} {sec * 1e6:9.1f} µs/result")
    _, counts = masker.mask(mb_struct, "standard")
    print(f"1 MB dense PII findings: {sum(counts.values())} {dict(sorted(counts.items()))}")
    for label, value, profile in (
        ("1 MB dense PII as JSON structure, standard (partial)", mb_struct, "standard"),
        ("1 MB dense PII as JSON structure, pseudonym", mb_struct, "pseudo"),
        ("1 MB dense PII as JSON structure, ledger (redact)", mb_struct, None),
        ("1 MB dense PII as one text string (content[].text), standard", mb_as_tool, "standard"),
    ):
        t0 = time.perf_counter()
        runs = 3 if args.quick else 5
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            masker.mask(value, profile)
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        print(f"{label:58s} {sec * 1e3:9.1f} ms/MB  ({1.5 / sec:5.1f}x faster than hoop's 1.5 s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
