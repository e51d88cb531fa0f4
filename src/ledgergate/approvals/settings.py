"""The `approvals` section of the config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ledgergate.durations import Duration


class ApprovalsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: Duration = 600.0
    grant_window: Duration = 300.0
    webhooks: list[str] = Field(default_factory=list)
