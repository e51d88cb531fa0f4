"""The `audit` section of the config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ledgergate.durations import Duration


class AuditSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signing_key: str = "./data/ledger.key"  # Go note signer key file; `<signing_key>.pub` holds the verifier key
    key_name: str = "ledgergate"  # signed-note key name used when the signing key is first created
    checkpoint_interval: Duration = 5.0
    witnesses: list[str] = Field(default_factory=list)  # file://PATH (append-only) or http(s)://URL (POST)
    replica: str | None = None  # log id; defaults to the host name
    hmac_key: str | None = None  # path of the key file for HMACs of raw arguments; default `<signing_key>.hmac`
    max_batch: int = Field(default=512, ge=1)
    append_timeout: Duration = 10.0  # an append not durable by then fails closed (LedgerUnavailable)
    #: who may read checkpoints, proofs and records over the REST API (bearer token, same identity rules)
    reader_groups: list[str] = Field(default_factory=lambda: ["auditors"])
