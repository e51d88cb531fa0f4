"""The policy stage: `(principal, server, method, target, arguments, time) → Decision`.

Semantics (docs/policy.md has the operator's version):

- Rules are ordered. A rule matches when every given `match` field accepts the
  request and its `when` condition (if any) is true.
- Default deny. Only an allow rule grants; deny and approve rules restrict.
  Across *all* matching rules deny beats approve beats allow: a call that an
  allow rule matches and an approve rule also matches needs approval; a call
  that only an approve rule matches is denied by default (an approve rule is a
  guard on calls someone may make, not a grant: with the example config a
  contractor's `get-sum(a=5000)` is denied, not sent to approvers).
  `Decision.rule` is the first matching rule with the winning effect;
  `Decision.matched` lists every matching rule in order.
- Mask: an allow decision takes the `mask` of the first matching allow rule
  (rule order is the operator's way to say which is strictest). An approve
  decision takes the approve rule's `mask`, else the first matching allow
  rule's, so approving a call never loosens its masking.
- A `when` that fails to evaluate (missing key, wrong type, ...) fails closed:
  an allow rule does not match, a deny or approve rule does. An error can
  therefore never turn a deny or an approval into an allow.
- Protocol housekeeping (initialize, ping, server/discover, list methods,
  notifications/*, ...; see rules.py) is allowed to a principal that some
  allow rule lets use the server (its principal and server fields match, and
  its condition could hold), unless a deny rule matches the method. An approve
  rule that matches housekeeping does not hold it up: nobody approves a ping.
- Server-to-client requests (sampling, elicitation, roots/list) match only
  rules that name them in `methods`.

The engine is immutable after construction apart from memo caches, so a
reload builds a new engine and swaps one reference (atomic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ledgergate.masking.names import LEDGER_PROFILE
from ledgergate.principal import Principal
from ledgergate.policy.cel import Activation, CelEvaluationError
from ledgergate.policy.decision import Decision
from ledgergate.policy.rules import (
    LIST_ITEM_KEY,
    LIST_METHODS,
    CompiledRule,
    RuleIndex,
    compile_rule,
    compile_rules,
    is_housekeeping,
    is_server_to_client,
    iter_bits,
    split_target,
)
from ledgergate.policy.settings import PolicyRuleSettings

_RULE_KEYS = frozenset({"name", "when", "mask", "approvers", "match", "effect"})
_GRANT_VARIABLES = frozenset({"principal", "server", "time"})
ListMethod = Literal["tools/list", "resources/list", "resources/templates/list", "prompts/list"]


def _activation(
    principal: Principal, server: str, method: str, target: str | None, arguments: Mapping[str, Any] | None, now: float
) -> Activation:
    kind, bare = split_target(method, target)
    return Activation(
        principal,
        server,
        method,
        tool=bare if kind == "tool" else None,
        resource=bare if kind == "resource" else None,
        prompt=bare if kind == "prompt" else None,
        args=arguments,
        now=now,
    )


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """Why one rule did or did not match (for `policy check`)."""

    rule: str
    effect: str
    status: Literal["matched", "no-match", "condition-false", "condition-error"]
    detail: str


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    traces: tuple[RuleTrace, ...]


class PolicyEngine:
    """Compiled, ordered rules; `decide` is pure (memo caches aside)."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(rules)
        self._index = RuleIndex(self.rules)

    @classmethod
    def from_settings(
        cls, rules: Sequence[PolicyRuleSettings], known_profiles: set[str] | None = None
    ) -> PolicyEngine:
        """Compile every rule; raises ValueError naming the rule (bad CEL, unknown mask profile, ...)."""
        return cls(compile_rules(rules, known_profiles))

    @staticmethod
    def rule_problems(
        rules: Sequence[PolicyRuleSettings], known_profiles: set[str] | None = None
    ) -> list[tuple[int, str | None, str]]:
        """Every rule `from_settings` would refuse, not just the first: `(index, key, message)`, where `key`
        is the rule's key at fault (`when`, `mask`, `approvers`, `name`) when the message names one, so the
        config loader can point at its line (the message then leaves the key out). The message is one line
        and starts with the rule's name."""
        problems: list[tuple[int, str | None, str]] = []
        seen: set[str] = set()
        for i, rule in enumerate(rules):
            if rule.name in seen:
                problems.append((i, "name", f"policy rule {rule.name!r}: the name is used twice"))
            seen.add(rule.name)
            try:
                compile_rule(i, rule, known_profiles)
            except ValueError as exc:
                message = " ".join(str(exc).split())
                prefix = f"policy rule {rule.name!r}: "
                key, sep, rest = message.removeprefix(prefix).partition(": ")
                if sep and key in _RULE_KEYS:  # the key goes into the location; the message keeps the name
                    problems.append((i, key, prefix + rest))
                else:
                    problems.append((i, None, message))
        return problems

    # --- decisions -----------------------------------------------------------

    def decide(
        self,
        principal: Principal,
        server: str,
        method: str,
        target: str | None,
        arguments: Mapping[str, Any] | None,
        now: float,
        notification: bool = False,
    ) -> Decision:
        """The decision for one request, or with `notification` for one notification (a message with no
        `id`: only then is `notifications/*` housekeeping). Pure: same inputs, same decision."""
        rules = self.rules
        candidates = self._index.candidates(principal, server, method, target)
        matched: list[CompiledRule] = []
        errors: list[str] = []
        act: Activation | None = None
        for i in iter_bits(candidates):
            r = rules[i]
            cond = r.condition
            if cond is not None:
                if act is None:
                    act = _activation(principal, server, method, target, arguments, now)
                try:
                    if not cond.evaluate(act):
                        continue
                except CelEvaluationError as exc:
                    errors.append(f"{r.name}: {exc}")
                    if r.effect == "allow":
                        continue
            matched.append(r)
        if is_housekeeping(method, notification):
            return self._housekeeping(principal, server, method, matched, errors, now)
        return self._combine(method, matched, errors)

    def _combine(self, method: str, matched: list[CompiledRule], errors: list[str]) -> Decision:
        names = tuple(r.name for r in matched)
        errs = tuple(errors)
        deny = approve = allow = None
        for r in matched:
            if r.effect == "deny":
                if deny is None:
                    deny = r
            elif r.effect == "approve":
                if approve is None:
                    approve = r
            elif allow is None:
                allow = r
        note = f"; condition error treated fail-closed: {'; '.join(errs)}" if errs else ""
        if deny is not None:
            return Decision("deny", deny.name, None, None, f"denied by rule {deny.name!r}{note}", names, errs)
        if allow is None:
            if is_server_to_client(method):
                reason = f"server-to-client {method} is refused unless a rule names it in 'methods' (default deny)"
            elif approve is not None:
                reason = (f"rule {approve.name!r} would require approval, but no allow rule lets this "
                          "principal make this call (default deny)")
            else:
                reason = "no policy rule allows this (default deny)"
            return Decision("deny", None, None, None, reason + note, names, errs)
        if approve is not None:
            # approval never loosens masking: the allow rule's profile unless the approve rule names one, and
            # when both name different ones the ledger's, which is never weaker than either (an approve rule
            # with a looser profile of its own unmasked what the allow rule masked)
            mask = allow.mask if approve.mask is None else approve.mask \
                if allow.mask in (None, approve.mask) else LEDGER_PROFILE
            why = f" ({approve.condition.source})" if approve.condition is not None else ""
            return Decision(
                "approve", approve.name, mask, approve.approvers,
                f"rule {approve.name!r} requires approval{why}{note}", names, errs,
            )
        return Decision("allow", allow.name, allow.mask, None, f"allowed by rule {allow.name!r}{note}", names, errs)

    def _housekeeping(
        self,
        principal: Principal,
        server: str,
        method: str,
        matched: list[CompiledRule],
        errors: list[str],
        now: float,
    ) -> Decision:
        names = tuple(r.name for r in matched)
        errs = tuple(errors)
        for r in matched:
            if r.effect == "deny":
                return Decision("deny", r.name, None, None, f"denied by rule {r.name!r}", names, errs)
        granting = next((r for r in matched if r.effect == "allow"), None)
        if granting is not None:
            return Decision("allow", granting.name, self._housekeeping_mask(principal, server), None,
                            f"protocol housekeeping ({method}) allowed by rule {granting.name!r}", names, errs)
        grant = self._server_grant(principal, server, now)
        if grant is not None:
            return Decision(
                "allow", grant.name, self._housekeeping_mask(principal, server), None,
                f"protocol housekeeping ({method}): rule {grant.name!r} lets this principal use server {server!r}",
                names, errs,
            )
        return Decision("deny", None, None, None,
                        f"no policy rule lets this principal use server {server!r} (default deny)", names, errs)

    def _housekeeping_mask(self, principal: Principal, server: str) -> str | None:
        """The masking profile for what is no one call's answer (lists, a server's hello, its messages
        outside any call, task status and results): the one profile every allow or approve rule that
        could apply to this principal on this server names, else the ledger's, which is never weaker
        than any. The first granting rule's was used: an unmasked `allow` for one tool placed first
        left a masked tool's task results and the server's own notifications in the clear."""
        index = self._index
        bits = index.principal_mask(principal) & index.server_mask(server) & ~index.deny
        masks = {self.rules[i].mask for i in iter_bits(bits)}
        if len(masks) == 1:
            return masks.pop()
        return LEDGER_PROFILE

    def _server_grant(self, principal: Principal, server: str, now: float) -> CompiledRule | None:
        """The first allow rule that could let this principal use this server (condition unknown or true)."""
        index = self._index
        mask = index.principal_mask(principal) & index.server_mask(server) & index.allow
        act: Activation | None = None
        for i in iter_bits(mask):
            r = self.rules[i]
            # a condition on the request (args, tool, method, ...) could hold for some request on this
            # server; one only on who/when/where is evaluated now
            if r.condition is None or not r.condition.variables <= _GRANT_VARIABLES:
                return r
            if act is None:
                act = _activation(principal, server, "", None, None, now)
            try:
                if r.condition.evaluate(act):
                    return r
            except CelEvaluationError:
                continue  # an erroring allow rule grants nothing
        return None

    # --- lists ---------------------------------------------------------------

    def may_use(self, principal: Principal, server: str, method: str, target: str | None, now: float) -> bool:
        """Could some arguments make this request allowed or approved?

        Approve rules cannot change the answer (they turn an allow into an
        approve, both usable), so only allow and deny rules are looked at.
        Conditions that read `args` are unknown here: on an allow rule it
        might hold (usable), on a deny rule it might not (does not hide).
        Conditions that do not read `args` are evaluated as in `decide` (with
        `args = {}`), so when no condition reads `args` this equals
        `decide(..., arguments={}).effect != "deny"`.
        """
        possible = False
        act: Activation | None = None
        index = self._index
        mask = index.candidates(principal, server, method, target) & (index.allow | index.deny)
        for i in iter_bits(mask):
            r = self.rules[i]
            cond = r.condition
            if cond is not None:
                if cond.uses_args:
                    if r.effect == "allow":
                        possible = True
                    continue
                if act is None:
                    act = _activation(principal, server, method, target, {}, now)
                try:
                    if not cond.evaluate(act):
                        continue
                except CelEvaluationError:
                    if r.effect == "allow":
                        continue
            if r.effect == "deny":
                return False
            possible = True
        return possible

    def filter_list(
        self, principal: Principal, server: str, method: ListMethod | str, items: list[dict[str, Any]], now: float
    ) -> list[dict[str, Any]]:
        """The items of a list answer the caller may use (see `may_use`).

        Each item is judged as the request that would use it: a tool as
        `tools/call` of its `name`, a resource as `resources/read` of its
        `uri`, a prompt as `prompts/get` of its `name`, a resource template as
        `resources/read` of its `uriTemplate` string (so `file:///docs/*`
        matches `file:///docs/{name}`; a rule naming only one concrete URI does
        not show the template: hiding is the safe side). Items without that
        key are dropped. Whether the list method itself is allowed is a
        separate `decide` call.
        """
        item_method = LIST_METHODS.get(method)
        if item_method is None:
            raise ValueError(f"{method!r} is not a list method")
        key = LIST_ITEM_KEY[method]
        out = []
        for item in items:
            target = item.get(key) if isinstance(item, dict) else None
            if isinstance(target, str) and self.may_use(principal, server, item_method, target, now):
                out.append(item)
        return out

    # --- explanation -----------------------------------------------------------

    def explain(
        self,
        principal: Principal,
        server: str,
        method: str,
        target: str | None,
        arguments: Mapping[str, Any] | None,
        now: float,
        notification: bool = False,
    ) -> Explanation:
        """The decision plus, for every rule, whether it matched and why (slow path; for humans)."""
        decision = self.decide(principal, server, method, target, arguments, now, notification)
        kind, bare = split_target(method, target)
        act = _activation(principal, server, method, target, arguments, now)
        traces = []
        for r in self.rules:
            refusal = r.static_match(principal, server, method, kind, bare)
            if refusal is not None:
                traces.append(RuleTrace(r.name, r.effect, "no-match", refusal))
                continue
            if r.condition is None:
                traces.append(RuleTrace(r.name, r.effect, "matched", "every match field accepts"))
                continue
            try:
                ok = r.condition.evaluate(act)
            except CelEvaluationError as exc:
                closed = r.effect != "allow"
                traces.append(RuleTrace(
                    r.name, r.effect, "condition-error",
                    f"when {r.condition.source!r} failed ({exc}); "
                    + ("treated as true: fail closed" if closed else "an allow rule does not match"),
                ))
                continue
            if ok:
                traces.append(RuleTrace(r.name, r.effect, "matched", f"when {r.condition.source!r} is true"))
            else:
                traces.append(RuleTrace(r.name, r.effect, "condition-false", f"when {r.condition.source!r} is false"))
        return Explanation(decision, tuple(traces))
