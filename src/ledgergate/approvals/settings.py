"""The `approvals` section of the config.

```yaml
approvals:
  timeout: 1h          # a pending approval expires (a denial, recorded) after this
  grant_window: 5m     # once approved, the identical call passes once within this window
  hold: 50s            # how long the gateway holds a waiting call on the wire
  console_url: "https://gateway.example/ui/approvals"   # optional, named in notifications
  webhooks:
    - {url: "https://hooks.example/T000/B000/XXX", format: slack}
    - {url: "https://siem.example/hooks/approvals", format: json, secret: "${APPROVAL_HOOK_SECRET}"}
```

A plain string in `webhooks` is read as `{url: STRING, format: slack}` (a Slack
incoming-webhook URL is its own secret, so it needs no signing key).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ledgergate.durations import Duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookSettings(_Strict):
    """One receiver of approval notifications."""

    url: str
    format: Literal["slack", "json"] = "json"
    #: HMAC-SHA256 key for `format: json` (required there); use `${ENV}` so it stays out of the file
    secret: str | None = None
    timeout: Duration = Field(default=5.0, gt=0)  # 0: every notification would fail

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a webhook url must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _signed(self) -> WebhookSettings:
        if self.format == "json" and not self.secret:
            raise ValueError("a json webhook needs a 'secret' (its bodies are signed with HMAC-SHA256)")
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError("a webhook 'secret' must be at least 16 characters")
        return self


class ApprovalsSettings(_Strict):
    timeout: Duration = 3600.0
    grant_window: Duration = Field(default=300.0, gt=0)  # 0: no approved retry could ever run
    hold: Duration = 50.0
    #: approvals one requester may have pending at once: past it a new one is refused (429), so one identity
    #: cannot bury the approvers' inbox (an outside test filed 3,000 in 18 s)
    max_pending: int = Field(default=50, ge=1)
    console_url: str | None = None
    webhooks: list[WebhookSettings] = Field(default_factory=list)

    @field_validator("webhooks", mode="before")
    @classmethod
    def _plain_urls(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"url": v, "format": "slack"} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("timeout", "grant_window", "hold")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a positive duration")
        return value
