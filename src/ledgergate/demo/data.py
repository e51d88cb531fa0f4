"""Deterministic fake banking data for the demo MCP server.

Every value is synthetic but *syntactically valid*, so the masking detectors
(which validate before they mask) fire on it exactly as they would on real data:

- SSNs obey the area/group/serial rules (area 001-899 except 666, group 01-99,
  serial 0001-9999),
- card numbers pass the Luhn check (Visa test range 4111 11xx ...),
- ABA routing numbers pass the 3-7-1 checksum,
- IBANs pass ISO 13616 mod-97,
- emails live under example.com / example.org (RFC 2606), phones in the
  fictional 555-01xx block.

Nothing here is random at import time: the same seed always yields the same
customers, so tests can assert on exact values.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import date, timedelta

__all__ = [
    "Account",
    "Branch",
    "Customer",
    "Transaction",
    "aba_is_valid",
    "aba_routing_number",
    "iban",
    "iban_is_valid",
    "luhn_card_number",
    "luhn_is_valid",
    "ssn_is_valid",
    "BANK",
    "Bank",
]


# --------------------------------------------------------------------------- validators / generators


def luhn_is_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 12:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _luhn_check_digit(partial: str) -> str:
    for check in range(10):
        if luhn_is_valid(partial + str(check)):
            return str(check)
    raise AssertionError("unreachable")


def luhn_card_number(rng: random.Random, prefix: str = "411111", length: int = 16) -> str:
    """A Luhn-valid card number, grouped in fours (``4111 1123 4567 8903``)."""
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    digits = body + _luhn_check_digit(body)
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def ssn_is_valid(ssn: str) -> bool:
    parts = ssn.split("-")
    if len(parts) != 3 or [len(p) for p in parts] != [3, 2, 4] or not all(p.isdigit() for p in parts):
        return False
    area, group, serial = (int(p) for p in parts)
    return 0 < area < 900 and area != 666 and group != 0 and serial != 0


def _ssn(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


_ABA_WEIGHTS = (3, 7, 1, 3, 7, 1, 3, 7, 1)


def aba_is_valid(routing: str) -> bool:
    if len(routing) != 9 or not routing.isdigit():
        return False
    return sum(w * int(d) for w, d in zip(_ABA_WEIGHTS, routing, strict=True)) % 10 == 0


def aba_routing_number(rng: random.Random) -> str:
    """A 9-digit ABA routing number with a valid 3-7-1 check digit (Federal Reserve prefix 01-12)."""
    first8 = f"{rng.randint(1, 12):02d}" + "".join(str(rng.randrange(10)) for _ in range(6))
    partial = sum(w * int(d) for w, d in zip(_ABA_WEIGHTS[:8], first8, strict=True))
    return first8 + str((10 - partial % 10) % 10)


def _iban_numeric(rearranged: str) -> int:
    return int("".join(str(int(c, 36)) for c in rearranged))


def iban_is_valid(value: str) -> bool:
    compact = value.replace(" ", "").upper()
    if len(compact) < 15 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    return _iban_numeric(compact[4:] + compact[:4]) % 97 == 1


def iban(country: str, bban: str) -> str:
    """An IBAN for ``bban`` with correct mod-97 check digits, grouped in fours."""
    check = 98 - _iban_numeric(bban + country + "00") % 97
    compact = f"{country}{check:02d}{bban}"
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Transaction:
    id: str
    date: str
    description: str
    amount: float
    balance_after: float
    counterparty_iban: str


@dataclass
class Account:
    id: str
    customer_id: str
    kind: str
    account_number: str
    routing_number: str
    iban: str
    balance: float
    transactions: list[Transaction] = field(default_factory=list)


@dataclass(frozen=True)
class Customer:
    id: str
    name: str
    date_of_birth: str
    ssn: str
    email: str
    phone: str
    address: str
    card_number: str
    card_expiry: str
    account_id: str
    risk_rating: str


@dataclass(frozen=True)
class Branch:
    id: str
    name: str
    address: str
    phone: str
    routing_number: str


_FIRST = ["Alice", "Bob", "Carmen", "Deepak", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Keiko", "Luis"]
_LAST = ["Nguyen", "Okafor", "Schmidt", "Patel", "Rossi", "Haddad", "Kim", "Tanaka", "Silva", "Berg", "Moreau", "Diaz"]
_STREETS = ["Maple Ave", "Harbor St", "Elm Rd", "Cedar Ln", "Oak Blvd", "Pine Ct", "Birch Way", "Willow Dr"]
_CITIES = ["Springfield, IL 62701", "Riverton, WY 82501", "Fairview, TN 37062", "Georgetown, TX 78626"]
_MERCHANTS = [
    "Grocery Mart",
    "City Utilities",
    "Coffee Corner",
    "Metro Transit",
    "Online Books",
    "Harbor Properties (rent)",
    "Pharmacy Plus",
    "Gas & Go",
    "Streaming Service",
]

_CREDITS = ["Payroll ACME Corp", "Refund Online Books", "Transfer from savings", "Interest payment"]


class Bank:
    """The whole fake bank: customers, accounts and their transactions, derived from one seed."""

    def __init__(self, seed: str = "ledgergate-demo", customers: int = 12) -> None:
        rng = random.Random(hashlib.sha256(seed.encode()).digest())
        self.customers: dict[str, Customer] = {}
        self.accounts: dict[str, Account] = {}
        self.branches: list[Branch] = []
        for i in range(3):
            self.branches.append(
                Branch(
                    id=f"BR-{100 + i}",
                    name=["Downtown", "Harborside", "Northgate"][i],
                    address=f"{rng.randint(1, 999)} {_STREETS[i]}, {_CITIES[i]}",
                    phone=f"+1-555-01{rng.randint(0, 99):02d}",
                    routing_number=aba_routing_number(rng),
                )
            )
        start = date(2026, 1, 5)
        for i in range(customers):
            cid = f"C-{1001 + i}"
            aid = f"A-{2001 + i}"
            first, last = _FIRST[i % len(_FIRST)], _LAST[(i * 5) % len(_LAST)]
            branch = self.branches[i % len(self.branches)]
            account_number = "".join(str(rng.randrange(10)) for _ in range(10))
            balance = round(rng.uniform(500, 25_000), 2)
            account = Account(
                id=aid,
                customer_id=cid,
                kind="checking" if i % 3 else "savings",
                account_number=account_number,
                routing_number=branch.routing_number,
                # GB BBAN: 4-letter bank code, 6-digit sort code, 8-digit account number.
                iban=iban("GB", "LGDB" + f"{rng.randint(0, 999_999):06d}" + account_number[-8:]),
                balance=balance,
            )
            running = balance
            for t in range(25):
                amount = round(rng.uniform(-400, 150) if t % 7 else rng.uniform(1500, 3500), 2)
                running = round(running + amount, 2)
                account.transactions.append(
                    Transaction(
                        id=f"T-{aid[2:]}-{t + 1:03d}",
                        date=(start + timedelta(days=t * 3 + i)).isoformat(),
                        description=(
                            _MERCHANTS[(t * 3 + i) % len(_MERCHANTS)] if amount < 0 else _CREDITS[(t + i) % len(_CREDITS)]
                        ),
                        amount=amount,
                        balance_after=running,
                        counterparty_iban=iban("DE", f"{rng.randint(10_000_000, 99_999_999)}{rng.randint(0, 10**10 - 1):010d}"),
                    )
                )
            account.balance = running
            self.accounts[aid] = account
            self.customers[cid] = Customer(
                id=cid,
                name=f"{first} {last}",
                date_of_birth=date(1950 + rng.randint(0, 50), rng.randint(1, 12), rng.randint(1, 28)).isoformat(),
                ssn=_ssn(rng),
                email=f"{first.lower()}.{last.lower()}@example.com",
                phone=f"+1-555-01{rng.randint(0, 99):02d}",
                address=f"{rng.randint(1, 999)} {_STREETS[(i + 3) % len(_STREETS)]}, {_CITIES[i % len(_CITIES)]}",
                card_number=luhn_card_number(rng),
                card_expiry=f"{rng.randint(1, 12):02d}/{rng.randint(27, 31)}",
                account_id=aid,
                risk_rating=["low", "low", "medium", "high"][rng.randrange(4)],
            )

    def find_account(self, account: str) -> Account | None:
        """Look an account up by its id (``A-2001``), account number or IBAN (spaces ignored)."""
        if account in self.accounts:
            return self.accounts[account]
        compact = account.replace(" ", "").upper()
        for acc in self.accounts.values():
            if compact in (acc.account_number, acc.iban.replace(" ", "")):
                return acc
        return None


BANK = Bank()
"""The default bank every demo server instance serves."""
