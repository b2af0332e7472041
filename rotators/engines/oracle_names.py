"""Oracle's user names and passwords as SQL text: `ALTER USER ... IDENTIFIED BY` binds neither,
so both are checked against Oracle's rules and quoted; what cannot be quoted safely is refused.
A name is spelled as for SQL*Plus: `app` is the user APP, `"App"` the case-sensitive user App."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rotators.errors import ConfigurationError, PasswordChangeError, SecretFormatError, shown

_NONQUOTED = re.compile(r"[A-Za-z][A-Za-z0-9_$#]*\Z")


@dataclass(frozen=True)
class OracleName:
    """A user name as the secret spells it and as the dictionary stores it."""

    spelled: str
    stored: str

    @property
    def quoted(self) -> bool:
        return self.spelled.startswith('"')


def parse_name(spelled: str) -> OracleName:
    """`app` is APP (a nonquoted identifier); `"App"` is App exactly. Anything else is refused."""
    if len(spelled) >= 2 and spelled[0] == spelled[-1] == '"':
        if not quotable(spelled[1:-1]):
            raise SecretFormatError(
                f"User name {shown(spelled)} cannot be quoted for Oracle: a quoted name holds no double "
                "quote and no control character"
            )
        return OracleName(spelled, spelled[1:-1])
    if not _NONQUOTED.match(spelled):
        raise SecretFormatError(
            f"User name {shown(spelled)} is not a nonquoted Oracle identifier (a letter, then letters, "
            "digits, _ $ #): write it in double quotes exactly as Oracle stores it, e.g. "
            f'"\\"{spelled.upper()}\\"" in the JSON'
        )
    return OracleName(spelled, spelled.upper())


def quotable(text: str) -> bool:
    return bool(text) and '"' not in text and not any(unicodedata.category(c) == "Cc" for c in text)


def quote(identifier: str) -> str:
    """A quoted identifier; Oracle has no escape for `"` inside one, so such names are refused."""
    if not quotable(identifier):
        raise PasswordChangeError(f"{shown(identifier)} cannot be quoted as an Oracle identifier")
    return f'"{identifier}"'


def quote_password(password: str) -> str:
    if not quotable(password):
        raise ConfigurationError(
            'An Oracle password cannot hold a double quote or a control character: keep " in '
            "EXCLUDE_CHARACTERS (it always is for generated passwords) and fix the stored one"
        )
    return f'"{password}"'
