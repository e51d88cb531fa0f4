"""docs/kubernetes.md against the rendered overlays: every file the gateway's config reads from a mounted
Secret (a key of that Secret) is listed among the Secret's keys in the docs' table of Secrets and is added
by a `kubectl create secret generic` command for it; and the storage URL the docs quote for an overlay is
the whole URL its config holds. The ha-postgres overlay reads `postgres-ca.crt` from
`ledgergate-ledger-keys` (`sslrootcert=`), which the docs once left out, and cut the URL short with `&…`."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.integration.test_kubernetes import (
    OVERLAYS,
    container,
    gateway_config,
    pod_spec,
    render,
)
from tests.support.procs import ROOT

DOC = (ROOT / "docs" / "kubernetes.md").read_text()


def secret_files(target: str) -> dict[str, set[str]]:
    """Secret name -> the keys of it whose mounted path the gateway's config names."""
    text, gw = gateway_config(render(target))
    volumes = {v["name"]: v for v in pod_spec(gw)["volumes"]}
    found: dict[str, set[str]] = {}
    for mount in container(gw, "ledgergate")["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        base = mount["mountPath"].rstrip("/") + "/"
        for match in re.finditer(re.escape(base) + r"([A-Za-z0-9._-]+)", text):
            found.setdefault(secret["secretName"], set()).add(match.group(1))
    return found


def documented_keys(secret: str) -> set[str]:
    row = next((line for line in DOC.splitlines() if line.startswith(f"| `{secret}`")), None)
    assert row is not None, f"docs/kubernetes.md lists no Secret {secret}"
    return set(re.findall(r"`([^`]+)`", row.split("|")[2]))


def created_keys(secret: str) -> set[str]:
    """Keys added by any `kubectl … create secret generic SECRET` command in the docs."""
    keys: set[str] = set()
    for command in re.findall(r"kubectl[^\n]*create secret generic " + re.escape(secret) + r"(?:[^\n]*\\\n)*[^\n]*", DOC):
        for spec in re.findall(r"--from-(?:file|literal)=(\S+)", command):
            name = spec.split("=", 1)[0] if "=" in spec else spec.rsplit("/", 1)[-1]
            keys.add(name)
    return keys


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_secret_key_the_config_reads_is_documented_and_created(target: str) -> None:
    for secret, files in secret_files(target).items():
        assert files - documented_keys(secret) == set(), (target, secret, "missing from the docs' table")
        assert files - created_keys(secret) == set(), (target, secret, "no `kubectl create secret` adds them")


def test_ha_postgres_reads_the_database_ca_from_the_keys_secret() -> None:
    assert "postgres-ca.crt" in secret_files("ha-postgres").get("ledgergate-ledger-keys", set())


@pytest.mark.parametrize("target", OVERLAYS)
def test_the_storage_url_the_docs_quote_is_whole(target: str) -> None:
    text, _ = gateway_config(render(target))
    storage = yaml.safe_load(text).get("storage")
    if not isinstance(storage, str) or not storage.startswith("postgres"):
        return
    assert storage in DOC, f"docs/kubernetes.md does not quote {target}'s storage URL whole: {storage}"
    assert "&…" not in DOC
