"""A real OpenID provider for tests: oauth2-mock-server (tests/peers/oidc_server.mjs) on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx

from tests.support.procs import PEERS, require_peers


class Provider:
    def __init__(self, port: int = 0) -> None:
        require_peers()
        self.proc = subprocess.Popen(["node", str(PEERS / "oidc_server.mjs"), str(port)], cwd=PEERS,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"oidc_server.mjs did not start: {err[:2000]}")
        info = json.loads(line)
        self.issuer: str = info["issuer"]
        self.kid: str = info["kid"]
        self.http = httpx.Client(base_url=self.issuer, timeout=10)

    def token(self, sub: str = "alice", groups: list[str] | None = None, aud: str = "ledgergate",
              claims: dict[str, Any] | None = None) -> str:
        return self.token_with({"sub": sub, "groups": groups if groups is not None else ["staff"], **(claims or {})},
                               aud=aud)

    def token_with(self, claims: dict[str, Any] | None = None, header: dict[str, Any] | None = None,
                   aud: str = "ledgergate") -> str:
        """A token for alice (group staff) with `claims` merged in (None deletes a claim) and `header` merged
        into the JOSE header."""
        body: dict[str, Any] = {"grant_type": "client_credentials", "aud": aud,
                                "claims": {"sub": "alice", "groups": ["staff"], **(claims or {})}}
        if header:
            body["header"] = header
        response = self.http.post("/token", json=body)
        response.raise_for_status()
        return response.json()["access_token"]

    def rotate(self) -> str:
        """A new signing key at the IdP; new tokens use it."""
        self.kid = self.http.post("/_control/rotate").json()["kid"]
        return self.kid

    def retire(self, kid: str) -> None:
        """Stop publishing a key in the JWKS."""
        self.http.post("/_control/retire", json={"kid": kid}).raise_for_status()

    def sign_in_as(self, claims: dict[str, Any] | None) -> None:
        """Every later authorization-code sign-in (`GET /authorize`, which signs in at once) gets tokens
        carrying `claims` (`sub`, `groups`, `aud`, …); None: the mock's own (`sub` johndoe)."""
        self.http.post("/_control/login", json={"claims": claims}).raise_for_status()

    def public_jwk(self, kid: str) -> dict[str, Any]:
        return next(k for k in self.http.get("/_control/keys").json()["keys"] if k["kid"] == kid)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
