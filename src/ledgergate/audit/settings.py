"""The `audit` section of the config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ledgergate.durations import Duration


class AuditSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signing_key: str = "./data/ledger.key"
    checkpoint_interval: Duration = 5.0
    witnesses: list[str] = Field(default_factory=list)
    replica: str | None = None  # log id; defaults to the host name
    hmac_key: str | None = None  # key for HMACs of raw arguments; generated beside the signing key if unset
    max_batch: int = Field(default=512, ge=1)
