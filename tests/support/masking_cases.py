"""What masking a value in place means, checked the same way by each test file of disguised values
(`test_masking_gaps.py`, `test_masking_separators.py`): the detector counted once, no identifying run of
the value's digits left, the text around it kept byte for byte, and under redact exactly the value's
characters replaced by the label."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def assert_masked_in_place(masker: Any, before: str, value: str, after: str, detector: str, profile: str | None,
                           leaks: Callable[[str, str, str], bool]) -> None:
    text = before + value + after
    masked, counts = masker.mask(text, profile)
    assert counts == {detector: 1}, (text, masked)
    assert not leaks(value, detector, masked), masked
    assert masked.startswith(before) and masked.endswith(after), masked
    if profile is None:  # redact: exactly the value's characters became the label
        assert masked == f"{before}[{detector}]{after}", masked
