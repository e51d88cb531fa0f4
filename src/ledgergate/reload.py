"""What a config reload needs besides the config itself: a file read only once it is complete,
and an honest account of which changes took effect and which wait for a restart.

An editor, `kubectl cp` or a ConfigMap update can leave a file half-written for a moment, and a
prefix of a YAML file often parses (a policy list cut after its first rule is still a list). So a
reload reads the file twice, `settle` seconds apart, and uses it only when both reads agree in
size, modification time, inode and SHA-256, and neither read saw the file change under it.

What a reload can change in place is decided here in one table, against the config the process
started with (listeners, stores, upstream connections and the ledger are built once): a report
that compares against the previous reload instead would say "nothing needs a restart" the second
time a restart-only key is saved.

A reload is also refused when it would take away every OIDC issuer the running config trusts
(`reload_problems`): applied live to every replica that shares the file, a lost `identity` block
turns the whole fleet into one that answers 401 to every person and workload.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledgergate.config import Settings

#: top-level keys a reload applies live; every other key needs a restart, except these sub-keys
LIVE_KEYS = ("identity", "policies", "masking", "budgets", "tool_drift")
#: sub-keys of restart-only sections that apply live anyway (read per request from the snapshot)
LIVE_SUBKEYS = {"audit": ("reader_groups",), "approvals": ("hold",)}


class UnstableFile(Exception):
    """The file kept changing (or vanished) while it was being read; nothing of it is used."""


@dataclass(frozen=True)
class StableBytes:
    data: bytes
    sha256: str


def _read_once(path: Path) -> tuple[tuple[int, int, int], bytes] | None:
    """One read bracketed by two stats; None when the file changed during the read."""
    before = os.stat(path)
    with open(path, "rb") as fh:
        data = fh.read()
    after = os.stat(path)
    sig = (before.st_size, before.st_mtime_ns, before.st_ino)
    if sig != (after.st_size, after.st_mtime_ns, after.st_ino) or len(data) != before.st_size:
        return None
    return sig, data


async def read_stable(path: Path, settle: float = 0.15, patience: float = 5.0) -> StableBytes:
    """The file's bytes once two reads `settle` apart agree; UnstableFile after `patience` seconds
    of change, OSError when it cannot be read at all."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + patience
    previous: tuple[tuple[int, int, int], bytes] | None = None
    while True:
        current = await asyncio.to_thread(_read_once, path)
        if current is not None and current == previous:
            return StableBytes(current[1], hashlib.sha256(current[1]).hexdigest())
        if loop.time() >= give_up:
            raise UnstableFile(f"the file kept changing for {patience:g} s; not read")
        previous = current
        await asyncio.sleep(settle)


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(size, mtime_ns, inode), or None while the file is missing: what the watcher compares."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


@dataclass(frozen=True)
class ReloadPlan:
    #: the settings to run: the new file's live parts over the started config's restart-only parts
    effective: Settings
    #: dotted keys that changed against what is running now and take effect with this reload
    applied: list[str]
    #: dotted keys whose new value differs from what the process started with and waits for a restart
    needs_restart: list[str]


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def plan_reload(started: Settings, running: Settings, new: Settings) -> ReloadPlan:
    """Split `new` into what applies now and what waits for a restart (see the module docstring)."""
    applied: list[str] = []
    needs_restart: list[str] = []
    update: dict[str, Any] = {}
    for key in Settings.model_fields:
        new_value, started_value, running_value = getattr(new, key), getattr(started, key), getattr(running, key)
        if key in LIVE_KEYS:
            update[key] = new_value
            if _dump(new_value) != _dump(running_value):
                applied.append(key)
            continue
        live = LIVE_SUBKEYS.get(key, ())
        new_d, started_d = _dump(new_value), _dump(started_value)
        if live:
            for sub in live:
                if new_d.get(sub) != _dump(running_value).get(sub):
                    applied.append(f"{key}.{sub}")
            changed = sorted(k for k in new_d if k not in live and new_d.get(k) != started_d.get(k))
            needs_restart.extend(f"{key}.{k}" for k in changed)
            update[key] = started_value.model_copy(update={sub: getattr(new_value, sub) for sub in live})
        else:
            if new_d != started_d:
                needs_restart.append(key)
            update[key] = started_value
    return ReloadPlan(new.model_copy(update=update), applied, needs_restart)


def reload_problems(running: Settings, new: Settings) -> list[str]:
    """Why `new` may not replace `running` in place, though it is a valid config (empty: it may).

    A config without the `identity.oidc` issuers the running one trusts (a block lost in an edit or a
    merge, a template rendered without its values) would refuse every token at once, on every replica
    reading the file, while each stays ready. Running without issuers is a deliberate change: it is
    applied by a restart, which starts from the file as a whole."""
    if running.identity.oidc and not new.identity.oidc:
        return [(f"identity.oidc: the new config lists no issuer, while the running one trusts "
                 f"{len(running.identity.oidc)}: applied live it would refuse the token of every person and "
                 f"workload; the running config stays (to run without OIDC issuers, restart with this config)")]
    return []
