"""Fuzzing config loading (`config.parse_config`) with generated YAML-ish documents.

Property: whatever the text, the result is a validated `Settings` or a `ConfigError` whose every
problem names a line — never a traceback. Documents are built three ways: from the real keys with
random values (so validation runs deep), the same with the text then cut or spliced (an editor
mid-save), and raw YAML punctuation (so the parser's own errors are reached).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledgergate.config import ConfigError, Settings, parse_config
from tests.fuzz.conftest import examples

SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["1s", "5m", "-1", "1e400", "0x10", "127.0.0.1:8080", "http://x", "unix:///a.sock:/m",
                     "${HOME}", "${NOPE}", "${NOPE:-d}", "allow", "deny", "approve", "redact", "*", "~",
                     "ａｌｌｏｗ", "１２", "sqlite:///x.db", "postgresql://u@h/db", "[", "&a", "*a"]),
)
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8) | st.sampled_from(["url", "name", "match", "effect"]),
                                       inner, max_size=3), max_leaves=12)
TOP = ["listen", "data_dir", "storage", "public_url", "allowed_hosts", "allowed_origins", "identity", "servers",
       "policies", "masking", "approvals", "audit", "limits", "budgets", "tool_drift", "log_level"]
SECTIONS = {
    "identity": ["oidc", "api_keys", "disabled_subjects", "token_cache_size"],
    "audit": ["signing_key", "checkpoint_interval", "witnesses", "replica", "append_timeout", "reader_groups",
              "max_batch"],
    "limits": ["max_body_bytes", "client_header_timeout", "upstream_connections", "max_client_connections"],
    "approvals": ["timeout", "grant_window", "hold", "webhooks", "console_url"],
    "tool_drift": ["mode", "servers"],
    "budgets": ["rate", "max_result_bytes", "overrides"],
    "masking": ["profiles", "detectors", "pseudonym_key"],
}
RULE_KEYS = ["name", "match", "when", "effect", "mask", "approvers", "description"]


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(TOP), unique=True, max_size=6)):
        if key in SECTIONS:
            doc[key] = draw(st.dictionaries(st.sampled_from(SECTIONS[key]), VALUE, max_size=3) | VALUE)
        elif key == "policies":
            doc[key] = draw(st.lists(st.dictionaries(st.sampled_from(RULE_KEYS), VALUE, max_size=4), max_size=3))
        elif key == "servers":
            doc[key] = draw(st.dictionaries(st.text(max_size=6), st.dictionaries(
                st.sampled_from(["url", "command", "args", "env", "headers", "timeout", "transport"]), VALUE,
                max_size=3), max_size=2))
        else:
            doc[key] = draw(VALUE)
    return doc


@st.composite
def texts(draw: st.DrawFn) -> str:
    how = draw(st.sampled_from(["document", "cut", "splice", "punctuation"]))
    if how == "punctuation":
        return draw(st.text(alphabet="abc:-[]{}&*!|>'\"%@#?,.\n\t ${}0123456789~\\", max_size=80))
    text = yaml.safe_dump(draw(documents()), sort_keys=False, allow_unicode=True)
    if how == "cut":
        return text[: draw(st.integers(min_value=0, max_value=len(text)))]
    if how == "splice":
        at = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:at] + draw(st.sampled_from(["\n  x: 1\n", "\t", ": :", "- ", "&a [*a]", "{", "\x00", "\ufeff",
                                                 "\n---\n", "!!python/object:os.system ''"])) + text[at:]
    return text


LINE = re.compile(r"^line \d+: ")


def check(text: str) -> None:
    try:
        result = parse_config(text, "fuzz.yaml", env={"HOME": "/home/x"})
    except ConfigError as exc:
        assert exc.problems, "a ConfigError names its problems"
        for problem in exc.problems:
            assert LINE.match(problem), f"no line in {problem!r}"
            assert "Traceback" not in problem and len(problem) < 4000
        return
    assert isinstance(result, Settings)


@settings(max_examples=examples(100), deadline=None)
@given(texts())
@example("a: &x [*x]\n")  # a recursive alias
@example("servers: &s {a: *s}\n")
@example("? [a, b]\n: 1\n")  # a sequence as a mapping key
@example("{? {a: 1} : 2}\n")
@example("servers:\n  ? [x]\n  : {url: 'http://a'}\n")
@example("listen: " + "[" * 400 + "\n")
@example("1: 2\n")
@example("null: x\n")
@example("listen: 127.0.0.1:99999999999999999999\n")
@example("audit: {checkpoint_interval: 1e400}\n")
@example("limits: {max_body_bytes: 1e400}\n")
@example("servers: {a: {url: 'unix://\udcff/x'}}\n".encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
def test_any_text_is_settings_or_a_config_error_with_a_line(text: str) -> None:
    check(text)


LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 10) + "]\n" for i in range(8))
ALIAS_CHAIN = "x0: &x0 [1]\n" + "".join(f"x{i}: &x{i} [[*x{i - 1}]]\n" for i in range(1, 60))


@pytest.mark.parametrize(("text", "expected"), [
    # found by this fuzzer: each was a RecursionError traceback (or, for LAUGHS, minutes of CPU)
    ("a: &x [*x]\n", "line 1: an alias refers to a value that contains it"),
    ("servers: &s {a: *s}\n", "line 1: an alias refers to a value that contains it"),
    ("policies:\n  " + "[" * 2000 + "]" * 2000 + "\n", "line 2: nested more than 64 levels deep"),
    (ALIAS_CHAIN, "nested more than 64 levels deep"),
    ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)), "nested more than 64 levels deep"),
    (LAUGHS, "line 5: the document expands to more than 100000 values (through aliases)"),
    # found by this fuzzer: a character YAML refuses gave a message with no line, in the parser's words
    ("\x00{}\n", "line 1: invalid YAML: character U+0000 is not allowed"),
    ("a: 1\nb: \x07\n", "line 2: invalid YAML: character U+0007 is not allowed"),
])
def test_documents_the_fuzzer_broke_are_refused_with_a_line(text: str, expected: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        parse_config(text, "fuzz.yaml", env={})
    assert time.monotonic() - started < 2  # deep flow nesting is refused before PyYAML's slow scan
    assert len(info.value.problems) == 1 and expected in info.value.problems[0], info.value.problems
    assert LINE.match(info.value.problems[0])
