"""The `masking` section of the config.

Validated on load by compiling it exactly as the gateway will (`Masker.from_settings`),
so an unknown detector name, a bad custom regex or a pseudonym profile without a key
is reported against the config file's line, not at the first request.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomDetectorSettings(_Strict):
    """A detector of your own: a regex over text and/or structured key names whose values it masks."""

    name: str
    pattern: str = ""
    keys: list[str] = Field(default_factory=list)


class ProfileSettings(_Strict):
    detectors: list[str] = Field(default_factory=list)
    operator: Literal["redact", "partial", "pseudonym"] = "redact"


class MaskingSettings(_Strict):
    profiles: dict[str, ProfileSettings] = Field(default_factory=dict)
    detectors: list[CustomDetectorSettings] = Field(default_factory=list)
    pseudonym_key: str | None = None

    @model_validator(mode="after")
    def _compiles(self) -> MaskingSettings:
        from ledgergate.masking.engine import (
            Masker,  # local: engine imports this module
        )

        Masker.from_settings(self)
        return self
