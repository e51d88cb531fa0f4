"""The `policies` section of the config: ordered rules."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MatchSettings(_Strict):
    groups: list[str] | None = None
    subjects: list[str] | None = None
    kinds: list[Literal["human", "service"]] | None = None
    servers: list[str] | None = None
    tools: list[str] | None = None
    methods: list[str] | None = None
    resources: list[str] | None = None
    prompts: list[str] | None = None


class ApproversSettings(_Strict):
    groups: list[str] = Field(default_factory=list)
    subjects: list[str] = Field(default_factory=list)
    count: int = Field(default=1, ge=1)


class PolicyRuleSettings(_Strict):
    name: str
    match: MatchSettings = Field(default_factory=MatchSettings)
    when: str | None = None
    effect: Literal["allow", "deny", "approve"]
    mask: str | None = None
    approvers: ApproversSettings | None = None
