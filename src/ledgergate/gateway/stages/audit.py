"""audit(request) and audit(response): the write-ahead records, and the `Evidence` every stage records with.

A request is not forwarded before its `rpc.request` record is durable, and an
answer is not returned before its `rpc.response` record is; if the ledger
cannot write, `append` raises LedgerUnavailable and nothing moves (fail closed).

Every record is masked whole with the ledger's own profile (every detector,
redacted) on its way in (`seal`): not only arguments and results but the target
(a resource URI's query, a tool name), `clientInfo`, error texts, `detail`s —
any string a caller or an upstream could have chosen. Left as they are: the
gateway's own ids, digests and counters, the verified principal, and config names
(`UNMASKED_FIELDS`), which masking could only corrupt. Raw arguments enter only
as a keyed digest. Each value is masked once: `args` are masked on their own (for
their counts) and are not masked again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ledgergate.audit import canonical
from ledgergate.errors import LedgerUnavailable
from ledgergate.gateway import offload
from ledgergate.gateway.call import Call, caller_meta
from ledgergate.gateway.stages.base import AuditPort, MaskingPort
from ledgergate.gateway.stages.masking import ledger_payload
from ledgergate.upstream.base import Message

#: fields no caller or upstream chooses: gateway ids and digests, counters, the verified principal,
#: names from the config (a server name is checked against it before anything is recorded)
UNMASKED_FIELDS = frozenset({
    "request_id", "session", "principal", "server", "args_hmac", "args_digest", "args_masked", "masked",
    "latency_ms", "count", "aggregated", "rule", "decision", "stage", "approval", "policy_version",
    "upstream_era", "needs_restart", "config_sha256", "trigger", "cancels",
})
_NOT_TEXT = (bool, int, float, type(None))


_MEMO_TEXT = 256
_MEMO_SIZE = 4096


class Sealer:
    """`seal` for one masker, remembering how short top-level strings came out.

    Most fields repeat from call to call (the method, a tool name, a resource URI), and a walk
    through the masker costs more than the rest of a record: a remembered string costs a dict
    lookup. The memo holds masked output keyed by (field, text) — the same function of the same
    input, so it changes speed, never what is recorded; it is bounded and dropped when full.
    """

    __slots__ = ("masker", "_memo")

    def __init__(self, masker: MaskingPort) -> None:
        self.masker = masker
        self._memo: dict[tuple[str, str], Any] = {}

    def __call__(self, fields: Mapping[str, Any], premasked: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The record as the ledger keeps it: every field through the ledger's masking (one walk for
        all that are not remembered) except `UNMASKED_FIELDS`, numbers and `premasked`."""
        kept: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        memo = self._memo
        for key, value in fields.items():
            if key in UNMASKED_FIELDS or key in premasked or isinstance(value, _NOT_TEXT):
                kept[key] = value
            elif type(value) is str and len(value) <= _MEMO_TEXT:
                known = memo.get((key, value), _UNSEEN)
                if known is _UNSEEN:
                    rest[key] = value
                else:
                    kept[key] = known
            else:
                rest[key] = value
        if rest:
            masked, _ = self.masker.mask_for_ledger(rest)
            for key, value in masked.items():
                kept[key] = value
                raw = rest[key]
                if type(raw) is str and len(raw) <= _MEMO_TEXT:
                    if len(memo) >= _MEMO_SIZE:
                        memo.clear()
                    memo[(key, raw)] = value
        return kept


_UNSEEN = object()


def seal(masker: MaskingPort, fields: Mapping[str, Any], premasked: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The record as the ledger keeps it (see `Sealer`; this one remembers nothing)."""
    return Sealer(masker)(fields, premasked)


class MaskedLedger:
    """An AuditPort that seals every record with the current config's masker: for the writers
    outside the pipeline (authentication, approvals, config reloads)."""

    def __init__(self, ledger: AuditPort, masker: Callable[[], MaskingPort]) -> None:
        self.ledger = ledger
        self.masker = masker
        self._sealer: Sealer | None = None

    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        masker = self.masker()
        if self._sealer is None or self._sealer.masker is not masker:  # a reload brought a new masker
            self._sealer = Sealer(masker)
        return await self.ledger.append(event, self._sealer(fields))


class Evidence:
    """How stages write records: the call's common fields, masked arguments and their digest, every
    record sealed (masked whole) on its way to the ledger."""

    def __init__(self, ledger: AuditPort, masker: MaskingPort, digest: Callable[[Any], str]) -> None:
        self.ledger = ledger
        self.masker = masker
        self.digest = digest
        self.seal = Sealer(masker)

    def mask(self, value: Any) -> tuple[Any, dict[str, int]]:
        return self.masker.mask_for_ledger(value)

    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        """A record with fields of the caller's choosing; all of them are masked here."""
        return await self.ledger.append(event, self.seal(fields))

    async def record(self, event: str, call: Call, *, method: str | None = None, with_args: bool = False,
                     premasked: Mapping[str, Any] | None = None, **fields: Any) -> int:
        """One record about `call`: its ids, principal, server, method and target, then `fields` (masked
        here) and `premasked` (fields the caller masked with `mask`: each value is masked once)."""
        base = self.base(call, method)
        base.update(fields)
        sealed = self.seal(base)
        if with_args:
            if offload.is_large(call.arguments):  # masked, digested and encoded off the event loop
                sealed.update(await offload.on_worker(self.args, call.arguments, True))
            else:
                sealed.update(self.args(call.arguments))
        if premasked:
            sealed.update(premasked)
        return await self.ledger.append(event, sealed)

    @staticmethod
    def base(call: Call, method: str | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"request_id": call.request_id, "session": call.session_id,
                                  "principal": call.principal.summary(), "server": call.server,
                                  "method": method or call.method}
        if method is None and call.target is not None:
            fields["target"] = call.target
        return fields

    def args(self, arguments: Mapping[str, Any] | None, encode: bool = False) -> dict[str, Any]:
        """The arguments' record fields; `encode`: the masked arguments as their canonical bytes already,
        for a large value (the ledger's writer then copies them rather than encoding them in its turn)."""
        if arguments is None:
            return {}
        masked, counts = self.mask(arguments)
        return {"args": canonical.encoded(masked, 1) if encode else masked, "args_hmac": self.digest(arguments),
                "args_masked": counts}


class AuditRequest:
    """The last request stage: the call is recorded as decided before anything is forwarded."""

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence

    async def on_request(self, call: Call) -> None:
        decision = call.decision
        released: dict[str, Any] = {"approval": call.approval_id} if call.approval_id is not None else {}
        # the caller's own `_meta` reaches tool code beside the arguments (SDK servers expose it), so the record
        # of what was asked holds it, masked like them; only when there is some, so typical records keep their size
        meta = caller_meta(call.params)
        extra = {"meta": await self._masked_meta(meta)} if meta is not None else None
        await self.evidence.record("rpc.request", call, with_args=True,
                                   rule=decision.rule if decision else None,
                                   decision=decision.effect if decision else None, premasked=extra, **released)

    async def _masked_meta(self, meta: Any) -> Any:
        """`meta` masked with the ledger's profile (a large one masked and encoded off the event loop)."""
        if offload.is_large(meta):
            return await offload.on_worker(self._masked_encoded, meta)
        return self.evidence.mask(meta)[0]

    def _masked_encoded(self, meta: Any) -> Any:
        return canonical.encoded(self.evidence.mask(meta)[0], 1)


class AuditResponse:
    """The last response stage: what the caller is about to see is recorded before it is sent."""

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence

    async def on_response(self, call: Call, response: Message) -> Message:
        clear = call.clear_response if call.clear_response is not None else response
        outcome = "error" if "error" in clear else "response"
        if call.ledger_view is not None and call.ledger_view[0] is clear:
            ledger_view = call.ledger_view[1]  # the masking stage's ledger pass over this same answer
        else:
            payload = ledger_payload(clear)
            ledger_view, _ = await offload.sized(payload, self.evidence.mask, payload)
        if offload.is_large(ledger_view):  # `{outcome: view}` puts the view at depth 2 of the record
            ledger_view = await offload.on_worker(canonical.encoded, ledger_view, 2)
        try:
            await self.evidence.record("rpc.response", call, premasked={outcome: ledger_view},
                                       latency_ms=call.latency_ms(), masked=call.masked)
        except LedgerUnavailable as exc:
            # Not the request record's refusal ("nothing was forwarded"): this call has run upstream, and
            # only its answer is withheld. A client told the same as for an unforwarded call would retry
            # a transfer that went through.
            raise LedgerUnavailable(
                f"the call ran upstream, but its outcome could not be recorded ({exc.message}), so its answer "
                f"is withheld; do not repeat a call that changes anything before checking its effect "
                f"(request id {call.request_id})",
                data={"requestId": call.request_id, "reason": "outcome_unrecorded", "forwarded": True}) from None
        return response
