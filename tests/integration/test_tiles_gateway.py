"""Who may read the C2SP tlog-tiles through the running gateway (README "Audit API"): the
checkpoint and the hash tiles need no token (a witness outside the company follows them);
the entry bundles are the records, so they need an auditor, like the rest of the audit API."""

from __future__ import annotations

import pytest

from test_policy_gateway import Env, env  # noqa: F401 - shared fixture: real gateway, OIDC provider, upstream

pytestmark = pytest.mark.node


async def test_checkpoint_and_hash_tiles_are_open_entries_need_an_auditor(env: Env) -> None:  # noqa: F811
    staff = env.provider.token("alice", ["staff"])
    auditor = env.provider.token("aud", ["auditors"])
    await env.call(staff, "echo", {"message": "hello"})
    async with env.gateway.http(auditor) as http:
        origin = (await http.get(f"{env.gateway.base}/api/v1/audit/checkpoint")).text.split("\n")[0]
    prefix = f"{env.gateway.base}/api/v1/audit/tiles/{origin.removeprefix('ledgergate/')}"
    async with env.gateway.http(None) as anonymous:
        cp = await anonymous.get(f"{prefix}/checkpoint")
        assert cp.status_code == 200 and cp.text.startswith(origin + "\n"), cp.text
        size = int(cp.text.split("\n")[1])
        tile = await anonymous.get(f"{prefix}/tile/0/000.p/{size}")
        assert tile.status_code == 200 and len(tile.content) == 32 * size
        entries = await anonymous.get(f"{prefix}/tile/entries/000.p/{size}")
        assert entries.status_code == 401 and "Bearer" in entries.headers.get("www-authenticate", "")
    async with env.gateway.http(staff) as http:
        assert (await http.get(f"{prefix}/tile/entries/000.p/{size}")).status_code == 403
        assert (await http.get(f"{prefix}/tile/0/000.p/{size}")).status_code == 200
    async with env.gateway.http(auditor) as http:
        entries = await http.get(f"{prefix}/tile/entries/000.p/{size}")
        assert entries.status_code == 200 and b'"event":"rpc.request"' in entries.content
