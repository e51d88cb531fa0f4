"""A condition is handed only the top-level argument fields it reads (`policy/cel.py` `args_fields`): the
projection must never change a decision. Each expression below is evaluated with the projection and with
every field, over argument maps that have, lack and mistype the fields it names; the outcomes (a boolean,
or an error) must be the same."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from ledgergate.policy.cel import Activation, CelEvaluationError, Condition, args_fields
from ledgergate.principal import Principal

ALICE = Principal(issuer="https://idp", subject="alice", kind="human", groups=frozenset({"staff"}), claims={})

EXPRESSIONS = [
    "args.amount > 1000",
    "args['to'] == 'DE89' && args.amount < 5",
    'has(args.memo) && args.memo.contains("rent")',
    "args.items.all(i, i.n > 0)",
    "size(args) > 2",
    "'amount' in args",
    "args.exists(k, k == 'to')",
    "[1, 2].exists(args, args > 1) && args.amount == 1",
    "args . amount >= 0 // args.ignored",
    'r"args.amount" == "x" || args.to == "x"',
    "'''args''' == tool || args.amount == 7",
    "args.amount == 1 ? args.to == 'a' : args.memo == 'b'",
    "tool == 'args' && args.to.startsWith('DE')",
]

ARGUMENTS: list[dict[str, Any]] = [
    {},
    {"amount": 7},
    {"amount": 5000, "to": "DE89", "memo": "rent", "items": [{"n": 1}, {"n": 2}], "other": {"deep": [1, 2]}},
    {"amount": "7", "to": 3, "memo": None, "items": [{"n": -1}]},
    {"to": "x", "amount": 1, "bulk": list(range(50))},
    {"amount": 1, "to": "a", "memo": "b"},
]


def outcome(condition: Condition, args: dict[str, Any]) -> object:
    try:
        return condition.evaluate(Activation(ALICE, "bank", "tools/call", tool="args", args=args))
    except CelEvaluationError:
        return "error"  # the message may name what the interpreter was given; the outcome is what matters


@pytest.mark.parametrize(("source", "args"), list(itertools.product(EXPRESSIONS, ARGUMENTS)))
def test_the_projection_never_changes_an_outcome(source: str, args: dict[str, Any]) -> None:
    projected = Condition.compile(source)
    whole = dataclasses.replace(projected, arg_fields=None)
    assert outcome(projected, args) == outcome(whole, args)


@pytest.mark.parametrize(("source", "fields"), [
    ("args.amount > 1000", {"amount"}),
    ("args['to'] == 'x' && args.amount < 5", {"to", "amount"}),
    ("args.items.all(i, i.a > 0)", {"items"}),
    ("has(args.x)", {"x"}),
    ("principal.subject == 'args' && args.a == 1", {"a"}),
    ("size(args) > 2", None),
    ("'k' in args", None),
    ("args.exists(k, k == 'a')", None),
    ("args[k] == 1", None),
    ('args["a\\\\"b"] == 1', None),
    ("xs.exists(args, args.b) && args.c == 1", None),
    ("args", None),
])
def test_which_fields_a_condition_reads(source: str, fields: set[str] | None) -> None:
    assert args_fields(source) == (None if fields is None else frozenset(fields))
