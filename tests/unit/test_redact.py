"""rotators.errors.redact: the scrubber every driver message goes through."""

from __future__ import annotations

from rotators.errors import REDACTED, redact


def test_every_occurrence_is_replaced() -> None:
    text = "password 'pw-123' rejected; retry with pw-123 (pw-123)"
    assert redact(text, ["pw-123"]) == f"password '{REDACTED}' rejected; retry with {REDACTED} ({REDACTED})"


def test_several_secrets() -> None:
    assert redact("user=alpha pass=beta", ["alpha", "beta"]) == f"user={REDACTED} pass={REDACTED}"


def test_longest_first_when_one_secret_contains_another() -> None:
    # Replacing "abc" first would leave "def" of the longer secret in the text.
    for order in (["abc", "abcdef"], ["abcdef", "abc"]):
        assert redact("x abcdef y abc", order) == f"x {REDACTED} y {REDACTED}"


def test_empty_strings_are_ignored() -> None:
    assert redact("nothing to hide", [""]) == "nothing to hide"
    assert redact("hide pw", ["", "pw", ""]) == f"hide {REDACTED}"


def test_no_secrets_and_no_match_leave_text_alone() -> None:
    assert redact("plain", []) == "plain"
    assert redact("plain", ["other"]) == "plain"


def test_accepts_any_iterable_and_duplicates() -> None:
    assert redact("a-b-a", (s for s in ["a", "a"])) == f"{REDACTED}-b-{REDACTED}"
