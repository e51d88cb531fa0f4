"""The `masking` section of the config, validated on load.

Why the checks live here and not in the engine: the config must be refused at
load, with the file's line, for an unknown detector name, a bad custom regex or a
pseudonym profile without a key — and this module must not import the engine
(which imports it). So the rules are checked here against the detector names in
`names` (a leaf), and `Masker.from_settings` runs the same `check` before it
compiles.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ledgergate.masking.names import (
    BLOB_UNSCANNED,
    BLOB_WITHHELD,
    BUILTIN_DETECTORS,
    LEDGER_PROFILE,
)

__all__ = ["MIN_PSEUDONYM_KEY", "CustomDetectorSettings", "MaskingSettings", "ProfileSettings", "check"]

MIN_PSEUDONYM_KEY = 16
_CUSTOM_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


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
    # Binary payloads (images, PDFs) cannot be scanned: `pass` forwards them and counts
    # BLOB_UNSCANNED; `withhold` replaces them with an empty payload and counts BLOB_WITHHELD.
    binary: Literal["pass", "withhold"] = "pass"


class MaskingSettings(_Strict):
    profiles: dict[str, ProfileSettings] = Field(default_factory=dict)
    detectors: list[CustomDetectorSettings] = Field(default_factory=list)
    pseudonym_key: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> MaskingSettings:
        check(self)
        return self


def _check_custom(det: CustomDetectorSettings, seen: set[str]) -> None:
    if not _CUSTOM_NAME.match(det.name):
        raise ValueError(f"masking detector {det.name!r}: name must match [A-Z][A-Z0-9_]*")
    if det.name in BUILTIN_DETECTORS or det.name in (BLOB_UNSCANNED, BLOB_WITHHELD):
        raise ValueError(f"masking detector {det.name!r}: name is taken by a built-in detector")
    if det.name in seen:
        raise ValueError(f"masking detector {det.name!r}: defined twice")
    if det.pattern:
        try:
            pattern = re.compile(det.pattern)
        except re.error as exc:
            raise ValueError(f"masking detector {det.name!r}: bad pattern: {exc}") from None
        if pattern.fullmatch("") is not None:
            raise ValueError(f"masking detector {det.name!r}: pattern matches the empty string")
    elif not any("".join(ch for ch in k.lower() if ch.isalnum()) for k in det.keys):
        raise ValueError(f"masking detector {det.name!r}: needs a pattern or keys")


def check(settings: MaskingSettings) -> None:
    """Raise ValueError naming the profile or detector that is wrong; return None if all is well."""
    seen: set[str] = set()
    for det in settings.detectors:
        _check_custom(det, seen)
        seen.add(det.name)
    known = {*BUILTIN_DETECTORS, *seen}
    key = settings.pseudonym_key
    for name, prof in settings.profiles.items():
        if name == LEDGER_PROFILE:
            raise ValueError(f"masking profile {name!r}: the name is reserved for the built-in ledger profile")
        for det_name in prof.detectors:
            if det_name not in known:
                raise ValueError(f"masking profile {name!r}: unknown detector {det_name!r} "
                                 f"(known: {', '.join(sorted(known))})")
        if prof.operator == "pseudonym" and (not key or len(key) < MIN_PSEUDONYM_KEY):
            raise ValueError(f"masking profile {name!r}: operator 'pseudonym' needs "
                             f"masking.pseudonym_key of at least {MIN_PSEUDONYM_KEY} characters")
