"""The resource-URI normaliser (policy/uri.py): one form for what an upstream would read as one
resource, a refusal for what it could read two ways. Properties are checked against Python's own
RFC 3986 reference resolution (urllib.parse.urljoin) where the two must agree."""

from __future__ import annotations

from urllib.parse import unquote, urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.policy.uri import UriRefused, normalize_params, normalize_uri, remove_dot_segments

DOC = "demo://resource/static/document/architecture.md"


@pytest.mark.parametrize("variant", [
    "demo://resource/static/document/./architecture.md",
    "demo://resource/static/document/x/../architecture.md",
    "demo://resource/static/document/%2e/architecture.md",
    "demo://resource/static/document/%2E%2e/document/architecture.md",
    "demo://resource/static/./document/.%2E/document/architecture.md",
    "DEMO://resource/static/document/architecture.md",
    "Demo://RESOURCE/static/document/architecture.md",
    "demo://resource/static/document/%61rchitecture%2Emd",
    "demo://resource/static/document/../../static/document/architecture.md",
    "demo://resource/../../../static/document/architecture.md",
])
def test_every_spelling_of_one_resource_has_one_form(variant: str) -> None:
    assert normalize_uri(variant) == DOC


@pytest.mark.parametrize("uri, why", [
    ("demo://resource/static/document/architecture.md ", "whitespace"),
    (" demo://resource/static/document/architecture.md", "whitespace"),
    ("demo://resource/static/document/archi\ttecture.md", "whitespace"),
    ("demo://resource/static/document/architecture.md\n", "whitespace"),
    ("demo://resource/static/document/architecture.md\x00", "NUL"),
    ("demo://resource/static/document/\u200barchitecture.md", "invisible"),
    ("demo://resource/static/document/\u202earchitecture.md", "invisible"),
    ("demo://resource/static/document/\u00a0architecture.md", "space"),
    ("demo://resource/static/document\\architecture.md", "backslash"),
    ("demo://resource/static/document/..%2Fdocument/architecture.md", "encodes '/'"),
    ("demo://resource/static/document/..%5cdocument/architecture.md", "encodes '/'"),
    ("demo://resource/static/document/%00architecture.md", "control"),
    ("demo://resource/static/document/%252e%252e/architecture.md", "double-encodes"),
    ("demo://resource/static/document/%25252e/architecture.md", "double-encodes"),
    ("demo://resource/static/document//architecture.md", "empty segment"),
    ("demo://resource/static/document/%zzarchitecture.md", "malformed"),
    ("demo://resource/static/document/architecture.md%2", "malformed"),
    ("static/document/architecture.md", "no scheme"),
    ("//resource/static/document/architecture.md", "no scheme"),
    ("urn:docs:./architecture.md/../secret", "parsers resolve differently"),
    ("demo://resource/static/document/{architecture}.md", "unencoded"),
    ("demo://r\u00e9source/static/document/architecture.md", "ASCII"),
    ("demo://resource:x/static", "port"),
    ("demo://re%2Fsource/static", "host contains"),
])
def test_what_could_be_read_two_ways_is_refused_with_a_reason(uri: str, why: str) -> None:
    with pytest.raises(UriRefused) as refused:
        normalize_uri(uri)
    assert why in refused.value.reason


def test_scheme_based_and_encoding_normalisation() -> None:
    assert normalize_uri("HTTP://Example.COM:80") == "http://example.com/"
    assert normalize_uri("https://example.com:443/a") == "https://example.com/a"
    assert normalize_uri("https://example.com:8443/a") == "https://example.com:8443/a"
    assert normalize_uri("file:///docs/caf\u00e9.md") == "file:///docs/caf%C3%A9.md"
    assert normalize_uri("file:///docs/caf%c3%a9.md") == "file:///docs/caf%C3%A9.md"
    assert normalize_uri("bank://customers/C-1001?q=a%2fb#x%7e") == "bank://customers/C-1001?q=a%2Fb#x~"
    assert normalize_uri("bank://customers/a%3Ab%40c") == "bank://customers/a:b@c"
    assert normalize_uri("urn:isbn:0451450523") == "urn:isbn:0451450523"
    assert normalize_uri("demo://user@HOST/x") == "demo://user@host/x"
    assert normalize_uri("demo://re%41source/x") == "demo://reasource/x"


def test_templates_keep_their_expressions() -> None:
    assert normalize_uri("demo://resource/dynamic/text/{resourceId}", template=True) == \
        "demo://resource/dynamic/text/{resourceId}"
    assert normalize_uri("DEMO://resource/./dynamic/{id}", template=True) == "demo://resource/dynamic/{id}"
    with pytest.raises(UriRefused):
        normalize_uri("demo://resource/dynamic/{id} ", template=True)


def test_params_of_every_method_that_names_a_resource() -> None:
    raw = "demo://resource/static/document/./architecture.md"
    for method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        assert normalize_params(method, {"uri": raw, "_meta": {"k": 1}}) == {"uri": DOC, "_meta": {"k": 1}}
        assert normalize_params(method, {"uri": DOC}) is None
    completion = {"ref": {"type": "ref/resource", "uri": "DEMO://resource/x/../{id}"}, "argument": {"name": "id"}}
    assert normalize_params("completion/complete", completion) == {
        "ref": {"type": "ref/resource", "uri": "demo://resource/{id}"}, "argument": {"name": "id"}}
    assert normalize_params("completion/complete", {"ref": {"type": "ref/prompt", "name": "a/../b"}}) is None
    listen = {"notifications": {"resourceSubscriptions": [raw, 7]}}
    assert normalize_params("subscriptions/listen", listen) == {"notifications": {"resourceSubscriptions": [DOC, 7]}}
    assert normalize_params("tools/call", {"name": "a/./b"}) is None
    with pytest.raises(UriRefused):
        normalize_params("resources/subscribe", {"uri": DOC + "\r\n"})


def test_remove_dot_segments_examples_of_rfc_3986() -> None:
    assert remove_dot_segments("/a/b/c/./../../g") == "/a/g"
    assert remove_dot_segments("mid/content=5/../6") == "mid/6"
    assert remove_dot_segments("/..") == "/"


_SEGMENT = st.sampled_from(["a", "b", "doc", ".", "..", "%2e", "%2E%2e", "x.md", "%41", "~"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_SEGMENT, min_size=1, max_size=8), st.sampled_from(["demo", "DeMo", "http"]),
       st.sampled_from(["h", "H", "host:1"]))
def test_normal_form_is_a_fixed_point_and_agrees_with_rfc_3986_resolution(segments: list[str], scheme: str,
                                                                        host: str) -> None:
    uri = f"{scheme}://{host}/" + "/".join(segments)
    try:
        normal = normalize_uri(uri)
    except UriRefused:
        return
    assert normalize_uri(normal) == normal  # idempotent: what is forwarded is already normal
    # Python's RFC 3986 §5.2 reference resolution (urljoin) of the decoded path names the same path
    decoded = "/" + "/".join(unquote(s) for s in segments)
    assert urlsplit(normal).path == urlsplit(urljoin("http://h/base", decoded)).path
    assert urlsplit(normal).scheme == scheme.lower() and urlsplit(normal).netloc == host.lower()


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_any_string_is_normalised_or_refused_never_crashes(text: str) -> None:
    for candidate in (text, "demo://h/" + text, "demo:" + text):
        try:
            normal = normalize_uri(candidate)
        except UriRefused as exc:
            assert exc.reason
            continue
        assert normal.isascii() and normalize_uri(normal) == normal
        assert not any(ch in normal for ch in " \t\r\n\\\x00")


@pytest.mark.parametrize("uri", ["file:///My%20Documents/report.md", "bank://customers/C%201001",
                                 "bank://search?q=a%20b", "bank://customers/C-1001"])
def test_white_space_inside_a_segment_is_kept(uri: str) -> None:
    assert normalize_uri(uri) == uri


@pytest.mark.parametrize("uri", ["bank://customers/C-1001%20", "bank://customers/%20C-1001",
                                 "bank://customers/C-1001%0A", "bank://customers/C-1001%E3%80%80",
                                 "bank://customers/%E2%80%83C-1001/x", "bank://customers?id=C-1001%20",
                                 "bank://customers?id=%20C-1001&x=1"])
def test_white_space_at_a_segments_edge_is_refused(uri: str) -> None:
    with pytest.raises(UriRefused, match="white space|control character"):
        normalize_uri(uri)
