"""Off-boarding does not fail open on a typo: an `identity.disabled_subjects` entry that could never
match anyone is a config error naming the entry, its line and what would match; every entry that
is accepted matches the principal it names (trailing slashes of the issuer aside, as for `iss`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledgergate.config import ConfigError, parse_config
from ledgergate.errors import AuthError
from ledgergate.identity.service import IdentityService
from ledgergate.identity.settings import IdentitySettings, OidcIssuerSettings
from ledgergate.principal import Principal

IDP = "http://127.0.0.1:18111"
OTHER = "https://login.example.com/tenant/v2.0/"


def config(global_entries: list[str], per_issuer: list[str] | None = None) -> str:
    lines = ["identity:", "  oidc:", f"    - issuer: {IDP}"]
    if per_issuer is not None:
        lines += ["      disabled_subjects:"] + [f"        - {e!r}" for e in per_issuer]
    lines += [f"    - issuer: {OTHER}", "  disabled_subjects:" + ("" if global_entries else " []")]
    lines += [f"    - {e!r}" for e in global_entries]
    return "\n".join(lines) + "\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    return str(info.value).splitlines()


@pytest.mark.parametrize(("entry", "says"), [
    # another scheme, host, port or case is another issuer: its people never reach this gateway
    ("https://127.0.0.1:18111#alice", f"configured issuers: '{IDP}', '{OTHER}'"),
    ("http://127.0.0.1:18112#alice", "configured issuers:"),
    ("http://localhost:18111#alice", "configured issuers:"),
    ("HTTP://127.0.0.1:18111#alice", f"did you mean '{IDP}#alice'?"),
    ("https://LOGIN.example.com/tenant/v2.0#alice", f"did you mean '{OTHER}#alice'?"),
    ("https://login.example.com/tenant#alice", "configured issuers:"),
    # an API key's subject is apikey:<name>
    ("ledgergate:apikey#ci", "'ledgergate:apikey#apikey:ci'"),
    # a subject with '#' in it, or a typo of an issuer that is not even a URL
    ("team#7", f"'{IDP}#team#7'"),
    (f"{IDP}#", "names no subject"),
])
def test_a_global_entry_that_can_never_match_is_refused_with_its_line(entry: str, says: str) -> None:
    text = config(["bob", entry])
    found = problems(text)
    assert len(found) == 1, found
    line = text.splitlines().index(f"    - {entry!r}") + 1
    assert found[0].startswith(f"config: line {line}: identity.disabled_subjects[1]: "), found
    assert says in found[0], found
    assert "bob" not in found[0]


def test_a_per_issuer_entry_naming_another_issuer_is_refused() -> None:
    text = config([], per_issuer=["carol", f"{OTHER}#dan", "ledgergate:apikey#apikey:ci", "https://idp.typo#erin"])
    found = problems(text)
    assert len(found) == 3, found
    for index, entry in ((1, f"{OTHER}#dan"), (2, "ledgergate:apikey#apikey:ci"), (3, "https://idp.typo#erin")):
        line = text.splitlines().index(f"        - {entry!r}") + 1
        assert any(p.startswith(f"config: line {line}: identity.oidc[0].disabled_subjects[{index}]: ")
                   and "would never match" in p and "identity.disabled_subjects" in p for p in found), found


def test_every_legitimate_form_is_accepted() -> None:
    entries = ["alice", "apikey:ci", "ledgergate:apikey#apikey:ci", "system:serviceaccount:ops:agent",
               "repo:org/app:ref:refs/heads/main", f"{IDP}#bob", f"{IDP}/#carol", f"{OTHER}#dan",
               f"{OTHER.rstrip('/')}#erin", f"{IDP}#odd#subject", "auth0|5f7c"]
    loaded = parse_config(config(entries, per_issuer=["frank", f"{IDP}#gina", f"{IDP}/#hank", "team#7"]), env={})
    assert loaded.identity.disabled_subjects == entries
    # API keys alone (no OIDC issuer): their forms are still accepted
    assert parse_config("identity:\n  disabled_subjects: [apikey:ci, 'ledgergate:apikey#apikey:ops']\n",
                        env={}).identity.disabled_subjects == ["apikey:ci", "ledgergate:apikey#apikey:ops"]


def _service(disabled: list[str], per_issuer: list[str] | None = None) -> IdentityService:
    settings = IdentitySettings(api_keys=False, disabled_subjects=disabled, oidc=[
        OidcIssuerSettings(issuer=IDP, disabled_subjects=per_issuer or []), OidcIssuerSettings(issuer=OTHER)])
    return IdentityService(settings, None, Path("."))


def _refused(svc: IdentityService, principal: Principal) -> bool:
    try:
        svc.check_disabled(principal)
    except AuthError as exc:
        assert exc.reason == "disabled"
        return True
    return False


def test_accepted_entries_match_the_principal_they_name() -> None:
    svc = _service([f"{IDP}/#alice", f"{OTHER.rstrip('/')}#bob", f"{IDP}#odd#subject",
                    "ledgergate:apikey#apikey:ci", "apikey:ops", "carol"],
                   per_issuer=[f"{IDP}#dan", f"{IDP}//#erin", "frank"])
    for principal in (Principal(IDP, "alice"), Principal(OTHER, "bob"), Principal(IDP, "odd#subject"),
                      Principal("ledgergate:apikey", "apikey:ci", "service"),
                      Principal("ledgergate:apikey", "apikey:ops", "service"), Principal(OTHER, "carol"),
                      Principal(IDP, "dan"), Principal(IDP, "erin"), Principal(IDP, "frank")):
        assert _refused(svc, principal), principal
    for principal in (Principal(OTHER, "alice"), Principal(IDP, "bob"), Principal(OTHER, "dan"),
                      Principal(OTHER, "frank"), Principal(IDP, "odd"), Principal("ledgergate:apikey", "apikey:x")):
        assert not _refused(svc, principal), principal

    # a reload applies the same matching
    svc.reconfigure(IdentitySettings(api_keys=False, disabled_subjects=[f"{OTHER}#zoe"], oidc=[
        OidcIssuerSettings(issuer=IDP), OidcIssuerSettings(issuer=OTHER)]))
    assert _refused(svc, Principal(OTHER, "zoe"))
    assert not _refused(svc, Principal(IDP, "alice"))
