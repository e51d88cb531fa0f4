"""An API path that names no endpoint answers as the API does, in JSON (a client reading JSON was handed
Starlette's plain-text "Not Found"), while an existing endpoint's other errors and the paths outside the API
are what they were. A real gateway."""

from __future__ import annotations

import httpx
import pytest

from tests.support import gateway as gw


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/nothing/here", "/api/", "/api/v2/approvals"])
async def test_an_unknown_api_path_is_a_json_404(gateway: gw.RunningGateway, token: str, path: str) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        r = await http.get(f"{gateway.base}{path}")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json"), r.text
    assert "no such API endpoint" in r.json()["error"]


async def test_known_endpoints_and_other_paths_are_unchanged(gateway: gw.RunningGateway, token: str) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        wrong_method = await http.delete(f"{gateway.base}/api/v1/approvals")
        elsewhere = await http.get(f"{gateway.base}/no-such-page")
        listed = await http.get(f"{gateway.base}/api/v1/approvals")
    assert wrong_method.status_code == 405
    assert elsewhere.status_code == 404 and not elsewhere.headers["content-type"].startswith("application/json")
    assert listed.status_code in (200, 403), listed.text
