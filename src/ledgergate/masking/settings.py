"""The `masking` section of the config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomDetectorSettings(_Strict):
    name: str
    pattern: str
    keys: list[str] = Field(default_factory=list)


class ProfileSettings(_Strict):
    detectors: list[str] = Field(default_factory=list)
    operator: Literal["redact", "partial", "pseudonym"] = "redact"


class MaskingSettings(_Strict):
    profiles: dict[str, ProfileSettings] = Field(default_factory=dict)
    detectors: list[CustomDetectorSettings] = Field(default_factory=list)
    pseudonym_key: str | None = None
