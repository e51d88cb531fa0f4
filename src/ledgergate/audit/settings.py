"""The `audit` section of the config."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ledgergate.durations import Duration


def witness_problem(spec: str) -> str | None:
    """Why `spec` cannot name a witness, or None. Never quotes an http(s) spec (it may carry a token)."""
    if spec.startswith("file://"):
        return None if spec[len("file://"):] else "file:// needs the witness file's path (file://./data/witness.log)"
    if not spec.startswith(("http://", "https://")):
        return "a witness is file://PATH (a file appended to) or an http(s)://URL (POSTed to)"
    if any(ch.isspace() or not ch.isprintable() for ch in spec):
        return "the URL must not contain spaces or control characters"
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError:
        return "the URL does not parse (its port must be 1-65535, an IPv6 host in closed [brackets])"
    if not parts.hostname:
        return "the URL needs a host (https://HOST[:PORT]/PATH)"
    if port == 0:
        return "the URL's port must be 1-65535"
    return None


class AuditSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signing_key: str = "./data/ledger.key"  # Go note signer key file; `<signing_key>.pub` holds the verifier key
    key_name: str = "ledgergate"  # signed-note key name used when the signing key is first created
    #: 0 turns the periodic checkpoints off, which the CLI's own ledgers do; a config may not (config.py)
    checkpoint_interval: Duration = 5.0
    witnesses: list[str] = Field(default_factory=list)  # file://PATH (append-only) or http(s)://URL (POST)
    replica: str | None = None  # log id; defaults to the host name
    hmac_key: str | None = None  # path of the key file for HMACs of raw arguments; default `<signing_key>.hmac`
    max_batch: int = Field(default=512, ge=1)
    append_timeout: Duration = Field(default=10.0, gt=0)  # an append not durable by then fails closed (LedgerUnavailable)
    #: who may read checkpoints, proofs and records over the REST API (bearer token, same identity rules)
    reader_groups: list[str] = Field(default_factory=lambda: ["auditors"])

    @field_validator("witnesses")
    @classmethod
    def _witnesses(cls, value: list[str]) -> list[str]:
        problems = [(i, spec, p) for i, spec in enumerate(value) if (p := witness_problem(spec)) is not None]
        if problems:  # one error per entry, located at the entry, so each names its own line
            raise ValidationError.from_exception_data("witnesses", [
                InitErrorDetails(type=PydanticCustomError("value_error", "{message}", {"message": message}),
                                 loc=(i,), input="(not shown)")
                for i, _, message in problems])
        return value
