"""`unix://` upstream URLs: what parses, and the precise config error for what does not."""

from __future__ import annotations

import pytest

from ledgergate.config import ConfigError, parse_config
from ledgergate.upstream.unix import UnixURL, parse_unix_url


@pytest.mark.parametrize(("url", "socket_path", "target"), [
    ("unix:///run/mcp/mcp.sock:/mcp", "/run/mcp/mcp.sock", "/mcp"),
    ("unix:///run/mcp/mcp.sock", "/run/mcp/mcp.sock", "/"),
    ("unix:///tmp/a.sock:/mcp/v1?tenant=x", "/tmp/a.sock", "/mcp/v1?tenant=x"),
    ("unix:///s:/", "/s", "/"),
])
def test_parses(url: str, socket_path: str, target: str) -> None:
    parsed = parse_unix_url(url)
    assert parsed == UnixURL(socket_path, target)
    assert parsed.http_url == f"http://localhost{target}"


@pytest.mark.parametrize(("url", "problem"), [
    ("unix://run/mcp.sock:/mcp", "absolute path"),
    ("unix://:/mcp", "absolute path"),
    ("unix:///run/mcp/:/mcp", "names a folder"),
    ("unix:///run/mcp.sock:mcp", "followed by the HTTP path"),
    ("unix:///run/m cp.sock:/mcp", "may not contain spaces"),
    ("unix:///run/mcp.sock:/m cp", "may not contain spaces"),
    ("unix:///run/mcp.sock:/mcp#frag", "'#'"),
    ("unix:///" + "x" * 120 + ".sock:/mcp", "longer than 107 bytes"),
])
def test_refused_with_a_reason(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_unix_url(url)
    assert problem in str(err.value)


def test_config_accepts_a_socket_url() -> None:
    s = parse_config('servers:\n  sidecar:\n    url: "unix:///run/mcp/mcp.sock:/mcp"\n', env={})
    assert s.servers["sidecar"].url == "unix:///run/mcp/mcp.sock:/mcp"


def test_config_error_names_key_and_line() -> None:
    text = 'listen: "127.0.0.1:8080"\nservers:\n  sidecar:\n    url: "unix://relative.sock:/mcp"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, env={})
    assert len(err.value.problems) == 1
    problem = err.value.problems[0]
    assert problem.startswith("line 3: servers.sidecar: 'url': unix:// needs the socket's absolute path"), problem


def test_other_schemes_still_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config('servers:\n  a:\n    url: "unixx:///x.sock"\n', env={})
    assert "must start with http:// or https:// (or unix://" in err.value.problems[0]
