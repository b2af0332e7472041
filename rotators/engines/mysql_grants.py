"""MySQL and MariaDB's SHOW GRANTS and SHOW CREATE USER, parsed: what an account holds, compared
between two accounts and replayed for the clone, in the server's own words. No driver here."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rotators.engines.mysql_auth import NATIVE, Account, Server
from rotators.errors import PasswordChangeError

# One privilege on one object: ("SELECT", None, ("shop", "*")), ("UPDATE", "id", ("shop", "orders")),
# ("ROLE", "`reader`", ("", "")) for a role grant; objects other than db.table keep their words.
Atom = tuple[str, str | None, tuple[str, str]]
ALL = "ALL PRIVILEGES"
# Global privileges an application user may hold without administering the server.
_HARMLESS_GLOBAL = {"USAGE", "SHOW DATABASES", "SHOW VIEW", "EXECUTE", "LOCK TABLES", "REPLICATION CLIENT",
                    "BINLOG MONITOR", "SLAVE MONITOR", "REPLICA MONITOR"}  # fmt: skip


# -- SHOW GRANTS, parsed: the same privileges replayed for another account --------------------------
_TOKEN = re.compile(
    r"`(?:[^`]|``)*`"  # `identifier`
    r"|'(?:[^'\\]|\\.|'')*'"  # 'string'
    r'|"(?:[^"\\]|\\.|"")*"'  # "ANSI identifier"
    r"|\d+\.\d+|[A-Za-z0-9_$]+|\s+|.",  # 1.500000 (MAX_STATEMENT_TIME) is one word
    re.S,
)
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_KEYWORD = {"GRANT": "TO", "REVOKE": "FROM", "SET": "FOR"}
# What may follow REQUIRE or the resource limits in SHOW CREATE USER.
_OPTION_END = {"PASSWORD", "ACCOUNT", "COMMENT", "ATTRIBUTE", "DEFAULT", "FAILED_LOGIN_ATTEMPTS"}
_LIMITS = ("MAX_QUERIES_PER_HOUR", "MAX_UPDATES_PER_HOUR", "MAX_CONNECTIONS_PER_HOUR", "MAX_USER_CONNECTIONS")


def _words(text: str) -> list[re.Match[str]]:
    return [token for token in _TOKEN.finditer(text) if not token.group().isspace()]


def _unquote(token: str) -> str:
    if token[:1] == "`":
        return token[1:-1].replace("``", "`")
    if token[:1] in ("'", '"'):
        quote = token[0]
        return re.sub(
            r"\\(.)|" + quote * 2,
            lambda m: quote if m.group(1) is None else _ESCAPES.get(m.group(1), m.group(1)),
            token[1:-1],
            flags=re.S,
        )
    return token


def _kept(text: str, words: Sequence[re.Match[str]], keep: Sequence[bool]) -> str:
    """The kept words as the server wrote them: runs of adjacent kept words keep their spacing."""
    parts: list[str] = []
    start: int | None = None
    end = 0
    for word, wanted in zip(words, keep, strict=True):
        if wanted:
            start = word.start() if start is None else start
            end = word.end()
        elif start is not None:
            parts.append(text[start:end])
            start = None
    if start is not None:
        parts.append(text[start:end])
    return " ".join(parts)


def auth_plugin(create_user: str, server: Server) -> str | None:
    """The one authentication plugin of `SHOW CREATE USER`; None for several (MariaDB's `VIA a OR
    b`). MariaDB prints no IDENTIFIED clause for a native account without a password."""
    words = [word.group() for word in _words(create_user)]
    upper = [word.upper() for word in words]
    if "IDENTIFIED" not in upper:
        return NATIVE if server.is_mariadb else None
    at = upper.index("IDENTIFIED")
    if "OR" in upper[at:]:
        return None
    following = upper[at + 1 : at + 3]
    if following == ["BY", "PASSWORD"]:
        return NATIVE
    if following[:1] in (["WITH"], ["VIA"]) and at + 2 < len(words):
        return _unquote(words[at + 2]).lower()
    return None


def _unparsable(line: str) -> PasswordChangeError:
    return PasswordChangeError(
        f"Cannot parse the SHOW GRANTS line {line[:80]!r}: nothing was copied; report it, or give the "
        "clone its privileges by hand and rotate again"
    )


@dataclass(frozen=True)
class Grant:
    """One SHOW GRANTS line without its grantee (and without any IDENTIFIED clause, which holds a
    password hash): `head` keyword <account> `tail`, e.g. "GRANT SELECT ON `shop`.*" TO ... "WITH
    GRANT OPTION". Head and tail are the server's own text, replayed as it printed them."""

    head: str
    keyword: str
    tail: str

    @classmethod
    def parse(cls, line: str, grantee: Account) -> Grant:
        words = _words(line)
        keyword = _KEYWORD.get(words[0].group().upper()) if words else None
        at = next((i for i, w in enumerate(words) if keyword and w.group().upper() == keyword), None)
        if keyword is None or at is None or at + 1 >= len(words):
            raise _unparsable(line)
        user, host, end = _unquote(words[at + 1].group()), "", words[at + 1].end()
        if at + 3 < len(words) and words[at + 2].group() == "@":
            host, end = _unquote(words[at + 3].group()), words[at + 3].end()
        if (user, host) != grantee:
            raise _unparsable(line)
        rest = line[end:]
        after, keep, skipping = _words(rest), [], False
        for word in after:
            upper = word.group().upper()
            skipping = upper == "IDENTIFIED" or (skipping and upper not in ("REQUIRE", "WITH"))
            keep.append(not skipping)
        return cls(line[: words[at].start()].strip(), keyword, _kept(rest, after, keep))

    def to(self, account: str) -> str:
        return " ".join(part for part in (self.head, self.keyword, account, self.tail) if part)

    @property
    def key(self) -> tuple[str, ...]:
        """For comparison: the server lists a grant's columns in no fixed order."""
        parts, group = [], None
        for word in _words(self.head):
            text = word.group()
            if text == "(":
                group = [""]
            elif group is not None and text == ")":
                parts.append("(" + ",".join(sorted(group)) + ")")
                group = None
            elif group is not None and text == ",":
                group.append("")
            elif group is not None:
                group[-1] += text
            else:
                parts.append(text)
        return (" ".join(parts), self.keyword, self.tail)

    @property
    def default_role(self) -> str | None:
        """The role of a MariaDB `SET DEFAULT ROLE r FOR ...` line."""
        return self.head.split(None, 3)[3] if self.is_default_role else None

    @property
    def roles(self) -> set[str]:
        """The roles of a role grant, as written."""
        if not self.is_role_grant:
            return set()
        return {part.strip() for part in self.head.split(None, 1)[1].split(",")}

    @property
    def _head_words(self) -> list[str]:
        return [w.group().upper() for w in _words(self.head)]

    @property
    def is_role_grant(self) -> bool:
        words = self._head_words
        return words[0] == "GRANT" and "ON" not in words

    @property
    def is_proxy(self) -> bool:
        return self._head_words[:2] == ["GRANT", "PROXY"]

    @property
    def is_default_role(self) -> bool:
        return self._head_words[0] == "SET"

    @property
    def atoms(self) -> set[Atom]:
        """The single privileges this line grants, for comparing what two accounts may do."""
        words = [w.group() for w in _words(self.head)]
        if not words or words[0].upper() != "GRANT":
            return set()  # SET DEFAULT ROLE grants nothing
        upper = [w.upper() for w in words]
        on = upper.index("ON") if "ON" in upper else len(words)
        target = _object(words[on + 1 :])
        names: list[tuple[str, list[str]]] = [("", [])]
        in_columns = False
        for word in words[1:on]:
            if word in "()":
                in_columns = word == "("
            elif word == ",":
                if not in_columns:
                    names.append(("", []))
            elif in_columns:
                names[-1][1].append(_unquote(word))
            else:  # privilege names are words apart; a role is `name`@`host`, written together
                space = " " if on < len(words) else ""
                names[-1] = ((names[-1][0] + space + word).strip(), names[-1][1])
        found: set[Atom] = set()
        for name, columns in names:
            privilege = name.upper() if on < len(words) else "ROLE"
            item = None if on < len(words) else name
            if privilege == "ALL":
                privilege = ALL
            parts: list[str | None] = [*columns] or [item]
            found.update((privilege, part, target) for part in parts)
        if re.search(r"\b(GRANT|ADMIN) OPTION\b", self.tail, re.I):
            found.add(("GRANT OPTION", None, target))
        return {atom for atom in found if atom[0] != "USAGE"}

    def undo(self, account: str) -> str | None:
        """Take back what REVOKE ALL PRIVILEGES, GRANT OPTION may leave: default roles, roles
        (MariaDB revokes them with ALL, so they go first) and proxy grants."""
        if self.is_role_grant or self.is_proxy:
            return f"REVOKE {self.head.split(None, 1)[1]} FROM {account}"
        if self.is_default_role:
            return f"SET DEFAULT ROLE NONE FOR {account}"
        return None


def _object(words: Sequence[str]) -> tuple[str, str]:
    """`shop`.* -> ("shop", "*"); a PROCEDURE or PROXY object keeps its words."""
    if len(words) == 3 and words[1] == ".":
        return (_unquote(words[0]), _unquote(words[2]))
    return (" ".join(words), "")


def _covers(held: set[Atom], atom: Atom) -> bool:
    """Whether `held` grants `atom`: ALL PRIVILEGES holds every privilege but GRANT OPTION, a
    database or global grant holds its tables, a table grant holds its columns."""
    privilege, column, (db, table) = atom
    for have, have_column, (have_db, have_table) in held:
        if have != privilege and not (have == ALL and privilege not in ("GRANT OPTION", "ROLE")):
            continue
        if have_column is not None and have_column != column:
            continue
        if (have_db, have_table) == (db, table) or have_db == "*" or (have_db == db and have_table == "*"):
            return True
    return False


def _atom_text(atom: Atom) -> str:
    privilege, column, (db, table) = atom
    if privilege == "ROLE":
        return f"role {column}"
    where = f"{db}.{table}" if table else db
    return f"{privilege}{f' ({column})' if column else ''} ON {where}"


def account_options(create_user: str, server: Server) -> str:
    """REQUIRE and the resource limits of `SHOW CREATE USER`, as one ALTER USER clause that sets
    every limit, so that a replay also clears what the source does not have."""
    words = _words(create_user)
    upper = [word.group().upper() for word in words]
    in_require: list[bool] = []
    limits = dict.fromkeys(_LIMITS + (("MAX_STATEMENT_TIME",) if server.is_mariadb else ()), "0")
    section = ""
    for index, word in enumerate(upper):
        previous = upper[index - 1] if index else ""
        following = upper[index + 1] if index + 1 < len(upper) else ""
        if word == "REQUIRE" and previous != "PASSWORD":  # not MySQL 8's PASSWORD REQUIRE CURRENT
            section = "require"
        elif word == "WITH" and following.startswith("MAX_"):
            section = "limits"
        elif word in _OPTION_END or word in ("IDENTIFIED", "WITH"):
            section = ""
        elif section == "limits" and word.startswith("MAX_") and re.fullmatch(r"[\d.]+", following):
            limits[word] = following
        in_require.append(section == "require" and word != "REQUIRE")
    settings = " ".join(f"{name} {value}" for name, value in limits.items())
    return f"REQUIRE {_kept(create_user, words, in_require) or 'NONE'} WITH {settings}"


@dataclass(frozen=True)
class Privileges:
    """Everything an account holds that a clone must hold too."""

    grants: tuple[Grant, ...]
    options: str | None  # REQUIRE ... WITH <limits>, where the server has ALTER USER
    default_roles: tuple[str, ...] | None  # MySQL 8: 'role'@'host' literals

    def same_as(self, other: Privileges | None) -> bool:
        return (
            other is not None
            and {g.key for g in self.replayable} == {g.key for g in other.replayable}
            and (self.options, self.default_roles) == (other.options, other.default_roles)
        )

    @property
    def replayable(self) -> list[Grant]:
        """The grants in SHOW GRANTS order, without a default role the account no longer holds
        (MariaDB keeps printing it after REVOKE, and refuses to set it for the clone)."""
        held = set().union(*(grant.roles for grant in self.grants))
        return [g for g in self.grants if g.default_role is None or g.default_role in held]

    @property
    def atoms(self) -> set[Atom]:
        return set().union(*(grant.atoms for grant in self.grants))

    def beyond(self, other: Privileges) -> list[str]:
        """What these privileges grant that `other` does not, in words."""
        theirs = other.atoms
        return sorted({_atom_text(atom) for atom in self.atoms if not _covers(theirs, atom)})

    @property
    def administrative(self) -> list[str]:
        """Grants that administer the server: global ones (beyond monitoring), anything but SELECT
        on the `mysql` schema (its tables hold every account), PROXY, and GRANT OPTION on *.*."""
        found = set()
        for privilege, column, (db, table) in self.atoms:
            if (db == "*" and privilege not in _HARMLESS_GLOBAL) or (db == "mysql" and privilege != "SELECT"):
                found.add(_atom_text((privilege, column, (db, table))))
            elif privilege == "PROXY":
                found.add("PROXY")
        return sorted(found)

    @property
    def may_create_users(self) -> bool:
        """CREATE USER (or ALL PRIVILEGES) on *.*: what a master needs to make the clone."""
        heads = [grant.head.upper() for grant in self.grants]
        return any(h.endswith(" ON *.*") and ("ALL PRIVILEGES" in h or "CREATE USER" in h) for h in heads)


def replay(wanted: Privileges, held: Privileges | None, target: str) -> list[str]:
    """What makes the privileges of `target` (an account, quoted) `wanted`: nothing when they
    match; a replay for a fresh account (`held` None); for one that drifted, everything taken back
    first, then the replay."""
    if wanted.same_as(held):
        return []
    statements: list[str] = []
    if held is not None:
        if held.default_roles:
            statements.append(f"SET DEFAULT ROLE NONE TO {target}")
        undone = sorted(held.grants, key=lambda grant: not grant.is_default_role)
        statements += [undo for grant in undone if (undo := grant.undo(target))]
        statements.append(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {target}")
    if wanted.options is not None:
        statements.append(f"ALTER USER {target} {wanted.options}")
    statements += [grant.to(target) for grant in wanted.replayable]
    if wanted.default_roles:
        statements.append(f"SET DEFAULT ROLE {', '.join(wanted.default_roles)} TO {target}")
    return statements
