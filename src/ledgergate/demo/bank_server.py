"""The demo upstream: a bank's customer-service backend as an MCP server.

Written with the official ``mcp`` SDK (``MCPServer``). All data is fake but
syntactically valid (see :mod:`ledgergate.demo.data`), so the gateway's masking
detectors have something real-looking to mask.

Run::

    python -m ledgergate.demo.bank_server                      # stdio (default)
    python -m ledgergate.demo.bank_server --transport http --port 8765
    python -m ledgergate.demo.bank_server --transport http --stateless
    python -m ledgergate.demo.bank_server --transport http --handshake-only

Over stdio nothing but MCP frames is written to stdout; logs go to stderr.
Over HTTP the server binds 127.0.0.1 only and serves ``/mcp``. Like every
SDK 2.3 Streamable HTTP server it answers both protocol eras on that URL (a
request whose ``MCP-Protocol-Version`` header names 2026-07-28 is served
statelessly, anything else by the handshake-era transport);
``--handshake-only`` refuses 2026-07-28 requests the way a 2025-era server
does, so a gateway can be tested against a genuinely handshake-only upstream.

Tools: ``lookup_customer``, ``list_transactions``, ``transfer_funds``,
``export_customers``, ``confirm_large_action`` (elicitation),
``summarize_customer`` (sampling), ``slow_report`` (progress + log messages).
Resources: ``bank://branches``, ``bank://customers/{customer_id}``.
Prompt: ``fraud_review``.
"""

# No `from __future__ import annotations`: the tools below are closures whose
# `Resolve(...)` annotations must be evaluated where the resolvers are in scope.
import argparse
import asyncio
import hashlib
import json
import logging
import sys
import warnings
from dataclasses import asdict
from typing import Annotated, Literal

import anyio
from mcp.server.mcpserver import (
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
    Sample,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import AssistantMessage, Message, UserMessage
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import (
    CallToolResult,
    CreateMessageResult,
    SamplingMessage,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

from ledgergate.demo.data import BANK, Bank, Customer

# ctx.info()/ctx.report_progress() logging is deprecated at 2026-07-28 (SEP-2577) but is
# exactly what the demo wants to show to handshake-era clients.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

log = logging.getLogger("ledgergate.demo.bank_server")

SERVER_NAME = "ledgergate-demo-bank"


# --------------------------------------------------------------------------- result models


class CustomerRecord(BaseModel):
    customer_id: str
    name: str
    date_of_birth: str
    ssn: str
    email: str
    phone: str
    address: str
    account_id: str
    account_number: str
    routing_number: str
    iban: str
    card_number: str
    card_expiry: str
    balance: float
    risk_rating: str


class TransactionRecord(BaseModel):
    id: str
    date: str
    description: str
    amount: float
    balance_after: float
    counterparty_iban: str


class TransactionList(BaseModel):
    account_id: str
    account_number: str
    count: int
    transactions: list[TransactionRecord]


class TransferConfirmation(BaseModel):
    confirmation_id: str
    status: Literal["completed"]
    from_account: str
    to_account: str
    amount: float
    memo: str
    new_balance: float


class CustomerExport(BaseModel):
    exported: int
    customers: list[CustomerRecord]


class Confirmation(BaseModel):
    """Confirmation of a large action."""

    confirm: bool = Field(description="Approve this action?")
    reason: str = Field(default="", description="Optional note for the audit trail")


class ActionDecision(BaseModel):
    action: str
    amount: float
    decision: Literal["approved", "rejected", "declined", "cancelled"]
    reason: str


class CustomerSummary(BaseModel):
    customer_id: str
    summary: str
    model: str


class ReportResult(BaseModel):
    steps: int
    accounts_scanned: int
    total_balance: float


# --------------------------------------------------------------------------- helpers


def _record(bank: Bank, customer: Customer) -> CustomerRecord:
    account = bank.accounts[customer.account_id]
    return CustomerRecord(
        customer_id=customer.id,
        name=customer.name,
        date_of_birth=customer.date_of_birth,
        ssn=customer.ssn,
        email=customer.email,
        phone=customer.phone,
        address=customer.address,
        account_id=account.id,
        account_number=account.account_number,
        routing_number=account.routing_number,
        iban=account.iban,
        card_number=customer.card_number,
        card_expiry=customer.card_expiry,
        balance=account.balance,
        risk_rating=customer.risk_rating,
    )


def _customer(bank: Bank, customer_id: str) -> Customer:
    # exactly as written: a server that trims or folds case serves C-1001 for "c-1001 ", which the gateway's
    # rules (exact, like its ledger) would not name; the demo shows the practice it asks of upstreams
    customer = bank.customers.get(customer_id)
    if customer is None:
        known = ", ".join(list(bank.customers)[:3])
        raise ToolError(f"unknown customer {customer_id!r} (try e.g. {known})")
    return customer


def _customer_text(r: CustomerRecord) -> str:
    return (
        f"Customer {r.customer_id}: {r.name}, born {r.date_of_birth}\n"
        f"SSN: {r.ssn}\n"
        f"Email: {r.email}  Phone: {r.phone}\n"
        f"Address: {r.address}\n"
        f"Account {r.account_id}: number {r.account_number}, routing {r.routing_number}, IBAN {r.iban}\n"
        f"Card: {r.card_number} (exp {r.card_expiry})\n"
        f"Balance: ${r.balance:,.2f}  Risk rating: {r.risk_rating}"
    )


# --------------------------------------------------------------------------- server


def build_server(bank: Bank | None = None, *, name: str = SERVER_NAME) -> MCPServer:
    """Build the demo bank server (a fresh instance each call; state is per instance)."""
    bank = bank or Bank()
    server = MCPServer(
        name=name,
        title="Demo Bank customer service",
        version="1.0.0",
        instructions=(
            "Customer-service backend of a (fictional) retail bank. Every value is synthetic. "
            "transfer_funds moves money and should be approved by a human."
        ),
        log_level="WARNING",
    )

    @server.tool(
        title="Look up a customer",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )
    def lookup_customer(customer_id: str) -> Annotated[CallToolResult, CustomerRecord]:
        """Full customer profile: name, SSN, contact details, account, routing and card numbers."""
        record = _record(bank, _customer(bank, customer_id))
        return CallToolResult(
            content=[TextContent(type="text", text=_customer_text(record))],
            structured_content=record.model_dump(mode="json"),
        )

    @server.tool(
        title="List account transactions",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )
    def list_transactions(account_id: str, limit: int = 10) -> TransactionList:
        """Most recent transactions of an account (id like A-2001, account number or IBAN), newest first."""
        account = bank.find_account(account_id)
        if account is None:
            raise ToolError(f"unknown account {account_id!r}")
        if not 1 <= limit <= 100:
            raise ToolError("limit must be between 1 and 100")
        recent = list(reversed(account.transactions))[:limit]
        return TransactionList(
            account_id=account.id,
            account_number=account.account_number,
            count=len(recent),
            transactions=[TransactionRecord(**asdict(t)) for t in recent],
        )

    @server.tool(
        title="Transfer funds",
        annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=False, open_world_hint=True),
    )
    def transfer_funds(from_account: str, to_account: str, amount: float, memo: str = "") -> TransferConfirmation:
        """Move money from one of the bank's accounts to another account (internal id, number or IBAN)."""
        source = bank.find_account(from_account)
        if source is None:
            raise ToolError(f"unknown source account {from_account!r}")
        if not amount > 0:
            raise ToolError("amount must be positive")
        amount = round(amount, 2)
        if amount > source.balance:
            raise ToolError(f"insufficient funds in {source.id}")
        target = bank.find_account(to_account)
        source.balance = round(source.balance - amount, 2)
        if target is not None:
            target.balance = round(target.balance + amount, 2)
        digest = hashlib.sha256(
            json.dumps([source.id, to_account, amount, memo, len(source.transactions)]).encode()
        ).hexdigest()
        log.warning("transfer %s -> %s amount %.2f", source.id, to_account, amount)
        return TransferConfirmation(
            confirmation_id=f"TRF-{digest[:12].upper()}",
            status="completed",
            from_account=source.id,
            to_account=target.id if target is not None else to_account,
            amount=amount,
            memo=memo,
            new_balance=source.balance,
        )

    @server.tool(
        title="Export all customers",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )
    def export_customers() -> CustomerExport:
        """Bulk export of every customer record with full PII (SSNs, card and account numbers)."""
        records = [_record(bank, c) for c in bank.customers.values()]
        return CustomerExport(exported=len(records), customers=records)

    # -- elicitation: the framework sends elicitation/create mid-call on a handshake-era
    #    connection and returns an input_required result on a 2026-07-28 one.

    def ask_confirmation(action: str, amount: float) -> Elicit[Confirmation]:
        return Elicit(f"Please confirm: {action} for ${amount:,.2f}", Confirmation)

    @server.tool(title="Confirm a large action with the user")
    def confirm_large_action(
        action: str,
        amount: float,
        answer: Annotated[ElicitationResult[Confirmation], Resolve(ask_confirmation)],
    ) -> ActionDecision:
        """Ask the human at the client (elicitation) to confirm an action before it is carried out."""
        decision: Literal["approved", "rejected", "declined", "cancelled"]
        if answer.action == "accept":
            decision = "approved" if answer.data.confirm else "rejected"
            reason = answer.data.reason
        else:
            decision, reason = ("declined" if answer.action == "decline" else "cancelled"), ""
        return ActionDecision(action=action, amount=amount, decision=decision, reason=reason)

    # -- sampling: same mechanism, asks the client's LLM.

    def ask_llm(customer_id: str) -> Sample:
        record = _record(bank, _customer(bank, customer_id))
        account = bank.accounts[record.account_id]
        recent = ", ".join(f"{t.description} {t.amount:+.2f}" for t in account.transactions[-5:])
        prompt = (
            f"Summarize this bank customer for a support agent in two sentences.\n"
            f"Name: {record.name}; risk rating: {record.risk_rating}; balance: {record.balance:.2f}; "
            f"recent transactions: {recent}"
        )
        return Sample(
            [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=200,
            system_prompt="You are a concise banking assistant.",
        )

    @server.tool(title="Summarize a customer with the client's LLM")
    def summarize_customer(
        customer_id: str, completion: Annotated[CreateMessageResult, Resolve(ask_llm)]
    ) -> CustomerSummary:
        """Ask the client's LLM (sampling) to summarize a customer's profile and recent activity."""
        content = completion.content
        text = content.text if isinstance(content, TextContent) else str(content)
        return CustomerSummary(customer_id=_customer(bank, customer_id).id, summary=text, model=completion.model)

    @server.tool(title="Slow branch report")
    async def slow_report(ctx: Context, steps: int = 3, delay: float = 0.2) -> ReportResult:
        """Scan all accounts in `steps` stages, reporting progress and log messages as it goes."""
        if not 1 <= steps <= 50:
            raise ToolError("steps must be between 1 and 50")
        delay = min(max(delay, 0.0), 5.0)
        accounts = list(bank.accounts.values())
        await ctx.info(f"slow_report: starting, {steps} steps over {len(accounts)} accounts")
        total = 0.0
        for step in range(1, steps + 1):
            chunk = accounts[(step - 1) * len(accounts) // steps : step * len(accounts) // steps]
            total += sum(a.balance for a in chunk)
            await anyio.sleep(delay)
            await ctx.report_progress(step, steps, f"step {step}/{steps}: scanned {len(chunk)} accounts")
            await ctx.debug(f"slow_report: step {step} done")
        await ctx.info("slow_report: done")
        return ReportResult(steps=steps, accounts_scanned=len(accounts), total_balance=round(total, 2))

    # -- resources

    @server.resource("bank://branches", name="branches", title="Branch directory", mime_type="application/json")
    def branches() -> str:
        """All branches with address, phone and routing number."""
        return json.dumps([asdict(b) for b in bank.branches], indent=2)

    @server.resource(
        "bank://customers/{customer_id}",
        name="customer",
        title="Customer profile",
        mime_type="application/json",
    )
    def customer_resource(customer_id: str) -> str:
        """One customer's full profile as JSON."""
        return _record(bank, _customer(bank, customer_id)).model_dump_json(indent=2)

    # -- prompts

    @server.prompt(title="Fraud review")
    def fraud_review(customer_id: str) -> list[Message]:
        """Review a customer's recent activity for signs of fraud."""
        record = _record(bank, _customer(bank, customer_id))
        account = bank.accounts[record.account_id]
        lines = "\n".join(f"- {t.date} {t.description}: {t.amount:+.2f}" for t in account.transactions[-10:])
        return [
            UserMessage(
                f"You are a fraud analyst. Review customer {record.customer_id} ({record.name}, "
                f"SSN {record.ssn}, card {record.card_number}, account {record.account_number}).\n"
                f"Recent transactions:\n{lines}\n"
                "List anything suspicious and recommend next steps."
            ),
            AssistantMessage("I'll review the transactions for unusual amounts, merchants and timing."),
        ]

    return server


# --------------------------------------------------------------------------- entry point


def _handshake_only(app):  # type: ignore[no-untyped-def]
    """Wrap an ASGI app so 2026-07-28 requests are refused as a 2025-era server would.

    A 2025-era SDK server that receives ``server/discover`` without a session id
    answers ``400 Bad Request`` with a JSON-RPC error; SDK clients in ``auto`` mode
    then fall back to ``initialize``.
    """
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
    from starlette.responses import JSONResponse

    async def wrapped(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            version = dict(scope["headers"]).get(b"mcp-protocol-version")
            if version is not None and version.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS:
                body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Bad Request: Missing session ID"}}
                await JSONResponse(body, status_code=400)(scope, receive, send)
                return
        await app(scope, receive, send)

    return wrapped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ledgergate.demo.bank_server", description=__doc__.split("\n")[0])
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--stateless", action="store_true", help="HTTP: no Mcp-Session-Id (SDK stateless_http)")
    parser.add_argument("--json-response", action="store_true", help="HTTP: answer with JSON instead of SSE")
    parser.add_argument("--handshake-only", action="store_true", help="HTTP: refuse 2026-07-28 requests")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)

    # Logs to stderr only: over stdio, stdout carries the protocol and nothing else.
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    server = build_server(BANK)

    if args.transport == "stdio":
        server.run("stdio")
        return

    import uvicorn

    app = server.streamable_http_app(
        stateless_http=args.stateless, json_response=args.json_response, host="127.0.0.1"
    )
    if args.handshake_only:
        app = _handshake_only(app)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level=args.log_level.lower(), lifespan="on")
    userver = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(userver.serve())
        while not userver.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.02)
        port = userver.servers[0].sockets[0].getsockname()[1]
        print(f"READY http://127.0.0.1:{port}/mcp", flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
