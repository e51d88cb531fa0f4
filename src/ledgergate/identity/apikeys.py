"""API keys: the last-resort credential, made as safe as a static secret can be.

A key is `lgk_` + 256 random bits (base64url). It is shown once at creation;
the store keeps only its SHA-256 (a fast hash is enough for a 256-bit random
value: there is nothing to brute-force). Keys expire, can be revoked, and record
when they were last used, so an owner who left is visible and removable.
The `lgk_` prefix lets the gateway route a credential without trying it as a JWT
and lets secret scanners recognise leaked keys.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from ledgergate.errors import AuthError
from ledgergate.principal import Principal
from ledgergate.store.apikeys_store import ApiKeyRecord, ApiKeyStore

API_KEY_PREFIX = "lgk_"
API_KEY_ISSUER = "ledgergate:apikey"
_KEY_BYTES = 32
_MAX_KEY_LEN = 128


def is_api_key(credential: str) -> bool:
    """True for credentials that look like ledgergate API keys (never sent to the JWT path)."""
    return credential.startswith(API_KEY_PREFIX)


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def subject_for(name: str) -> str:
    """The principal subject of a key, what policies and `disabled_subjects` name."""
    return f"apikey:{name}"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """The result of `create`: the record and the key itself (shown once, then forgotten)."""

    record: ApiKeyRecord
    key: str


def create_key(store: ApiKeyStore, name: str, groups: list[str], expires_in: float | None,
               now: float | None = None) -> CreatedKey:
    """Create and store a key; only its hash is written."""
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise ValueError("a key name is 1-100 characters without spaces")
    now = time.time() if now is None else now
    active = [r for r in store.find(name) if r.name == name and r.state(now) == "active"]
    if active:
        raise ValueError(f"an active key named {name!r} already exists (id {active[0].id}); revoke it first")
    key = API_KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
    record = ApiKeyRecord(
        id="ak_" + secrets.token_hex(6),
        name=name,
        key_hash=hash_key(key),
        groups=tuple(sorted({g.strip() for g in groups if g.strip()})),
        created_at=now,
        expires_at=None if expires_in is None else now + expires_in,
        revoked_at=None,
        last_used_at=None,
    )
    store.insert(record)
    return CreatedKey(record=record, key=key)


def revoke_key(store: ApiKeyStore, id_or_name: str, now: float | None = None) -> ApiKeyRecord:
    """Revoke one key by id (or by name when exactly one unrevoked key has it)."""
    now = time.time() if now is None else now
    matches = [r for r in store.find(id_or_name) if r.revoked_at is None]
    if not matches:
        raise LookupError(f"no unrevoked API key with id or name {id_or_name!r}")
    if len(matches) > 1:
        raise LookupError(f"{len(matches)} keys are named {id_or_name!r}; revoke by id")
    if not store.revoke(matches[0].id, now):
        raise LookupError(f"API key {matches[0].id} was revoked concurrently")
    return store.find(matches[0].id)[0]


def check_key(store: ApiKeyStore, credential: str, now: float) -> tuple[Principal, ApiKeyRecord]:
    """The principal for an API key, reading its row afresh (revocation takes effect at once)."""
    if len(credential) > _MAX_KEY_LEN:
        raise AuthError("the API key is not valid", "invalid_token")
    record = store.by_hash(hash_key(credential))
    if record is None:
        raise AuthError("the API key is not valid", "invalid_token")
    state = record.state(now)
    if state == "revoked":
        raise AuthError("the API key has been revoked", "revoked")
    if state == "expired":
        raise AuthError("the API key has expired", "expired")
    principal = Principal(
        issuer=API_KEY_ISSUER,
        subject=subject_for(record.name),
        kind="service",
        groups=frozenset(record.groups),
        claims={"key_id": record.id, "name": record.name},
        expires_at=record.expires_at,
        credential=record.id,
    )
    return principal, record
