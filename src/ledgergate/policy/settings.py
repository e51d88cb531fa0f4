"""Config models owned by the policy stage.

- `policies` (a list of `PolicyRuleSettings`): ordered rules, see docs/policy.md.
- `budgets` (`BudgetsSettings`): per-principal call rate limits and the maximum
  result size.
- `tool_drift` (`ToolDriftSettings`): what happens when a tool's definition
  changes after it was first seen (block until `ledgergate tools accept`, or
  only alert).

Only shape is checked here; meaning (CEL syntax, mask profiles that exist) is
checked when the engine is built, so the error can name the rule.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DriftMode = Literal["block", "alert", "off"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_empty_lists(value: list[str] | None) -> list[str] | None:
    # An empty list would match nothing: a deny rule written that way would be
    # silently inert, so we refuse it rather than guess.
    if value is not None and len(value) == 0:
        raise ValueError("an empty list matches nothing; omit the key to match anything")
    if value is not None and any(not isinstance(v, str) or v == "" for v in value):
        raise ValueError("entries must be non-empty strings")
    return value


class MatchSettings(_Strict):
    """Every given field must match (fields are AND-ed, entries within a field OR-ed)."""

    groups: list[str] | None = None  # any-of, exact group names
    subjects: list[str] | None = None  # any-of, globs on the principal's subject
    kinds: list[Literal["human", "service"]] | None = None
    servers: list[str] | None = None  # globs
    tools: list[str] | None = None  # globs on the tool name (tools/call)
    methods: list[str] | None = None  # globs on the JSON-RPC method
    resources: list[str] | None = None  # globs on the resource URI (resources/read, subscribe)
    prompts: list[str] | None = None  # globs on the prompt name (prompts/get)

    @field_validator("groups", "subjects", "servers", "tools", "methods", "resources", "prompts")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        return _no_empty_lists(value)


class ApproversSettings(_Strict):
    groups: list[str] = Field(default_factory=list)
    subjects: list[str] = Field(default_factory=list)
    count: int = Field(default=1, ge=1)
    #: `required`: the requester must give a reason for the call before it is sent to approvers
    justification: Literal["required", "optional"] = "optional"


class PolicyRuleSettings(_Strict):
    name: str
    description: str | None = None
    match: MatchSettings = Field(default_factory=MatchSettings)
    when: str | None = None  # CEL; compiled once at load
    effect: Literal["allow", "deny", "approve"]
    mask: str | None = None  # masking profile name (allow/approve rules)
    approvers: ApproversSettings | None = None  # required for effect: approve


# --- budgets -----------------------------------------------------------------


class RateSettings(_Strict):
    """A token bucket: `per_second` sustained, up to `burst` at once."""

    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class BudgetMatchSettings(_Strict):
    groups: list[str] | None = None
    subjects: list[str] | None = None
    kinds: list[Literal["human", "service"]] | None = None
    servers: list[str] | None = None

    @field_validator("groups", "subjects", "servers")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        return _no_empty_lists(value)


class BudgetOverrideSettings(_Strict):
    """A budget for the callers/servers it matches; the first matching override wins.

    A key left out falls back to the top-level value; `unlimited_rate: true`
    exempts the matched callers from the rate limit.
    """

    name: str
    match: BudgetMatchSettings = Field(default_factory=BudgetMatchSettings)
    rate: RateSettings | None = None
    max_result_bytes: int | None = Field(default=None, ge=1)
    unlimited_rate: bool = False


class BudgetsSettings(_Strict):
    """Top-level `budgets:` key.

    ```yaml
    budgets:
      rate: {per_second: 5, burst: 20}      # per principal (and per server if per_server)
      per_server: false
      methods: ["tools/call", "resources/read", "prompts/get", "completion/complete"]
      max_result_bytes: 1048576
      overrides:
        - name: ci-jobs
          match: {kinds: [service]}
          rate: {per_second: 50, burst: 100}
    ```
    """

    rate: RateSettings | None = None  # None: no rate limit
    per_server: bool = False
    methods: list[str] = Field(
        default_factory=lambda: ["tools/call", "resources/read", "prompts/get", "completion/complete"]
    )
    max_result_bytes: int | None = Field(default=None, ge=1)  # None: no limit
    overrides: list[BudgetOverrideSettings] = Field(default_factory=list)


# --- tool drift --------------------------------------------------------------


class ToolDriftSettings(_Strict):
    """Top-level `tool_drift:` key.

    ```yaml
    tool_drift:
      mode: block            # block | alert | off
      servers: {sandbox: alert}
    ```
    """

    mode: DriftMode = "block"
    servers: dict[str, DriftMode] = Field(default_factory=dict)

    def mode_for(self, server: str) -> DriftMode:
        return self.servers.get(server, self.mode)
