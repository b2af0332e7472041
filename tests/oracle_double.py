"""A recording stand-in for python-oracledb at the driver boundary: no Oracle server runs here.

`OracleDouble.install(monkeypatch)` replaces `oracledb.connect`. Every connect call (its keyword
arguments), every statement and its binds are recorded in order. Queries of the dictionary views
the Oracle engine reads are answered from a `Dictionary`; any other query from `rows`. The double
can be scripted to refuse logins, to fail a given statement (by its index among all statements
executed, or by a prefix) with a real oracledb error, and to report a given server version.

With `passwords` given, it also keeps the one piece of server state a rotation needs to be
driven end to end: who logs in with which password. `CREATE USER` / `ALTER USER ... IDENTIFIED
BY` change it (and CREATE USER adds the user to the dictionary); grants are only recorded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import oracledb
import pytest
from oracledb.errors import _Error

_IDENTIFIED = re.compile(r'(CREATE|ALTER) USER "([^"]+)" IDENTIFIED BY "([^"]*)"')


def stored(user: str) -> str:
    """Oracle's reading of a login name: `"App"` is App, anything else is upper-cased."""
    return user[1:-1] if len(user) > 1 and user[0] == user[-1] == '"' else user.upper()


def ora_error(code: int, text: str) -> oracledb.DatabaseError:
    """The exception oracledb raises for a server error, e.g. ora_error(1017, "invalid credential")."""
    return oracledb.DatabaseError(_Error(f"ORA-{code:05d}: {text}", code=code))


@dataclass
class Dictionary:
    """What DBA_USERS and the DBA_*_PRIVS views say, row by row (Oracle's stored names)."""

    users: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # profile, tablespace, temp
    sys_privs: list[tuple[str, str, str]] = field(default_factory=list)  # grantee, privilege, admin
    role_privs: list[tuple[str, str, str, str]] = field(default_factory=list)  # + default_role
    tab_privs: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)
    col_privs: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)

    def user(
        self, name: str, profile: str = "DEFAULT", tablespace: str = "USERS", temp: str = "TEMP"
    ) -> None:
        self.users[name] = (profile, tablespace, temp)

    def answer(self, statement: str, binds: dict[str, Any]) -> list[tuple[Any, ...]] | None:
        grantees = {binds.get("source"), binds.get("clone")}
        if statement.startswith("SELECT profile, default_tablespace, temporary_tablespace FROM dba_users"):
            return [self.users[binds["name"]]] if binds["name"] in self.users else []
        if statement.startswith("SELECT 1 FROM dba_users"):
            return [(1,)] if binds["name"] in self.users else []
        for view, rows in (
            ("dba_sys_privs", self.sys_privs),
            ("dba_role_privs", self.role_privs),
            ("dba_tab_privs", self.tab_privs),
            ("dba_col_privs", self.col_privs),
        ):
            if f"FROM {view} " in statement:
                return [row for row in rows if row[0] in grantees]
        return None


class RecordingCursor:
    def __init__(self, double: OracleDouble) -> None:
        self.double = double
        self.rows: list[tuple[Any, ...]] = []

    def __enter__(self) -> RecordingCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.double.closed_cursors += 1

    def execute(self, statement: str, parameters: dict[str, Any] | None = None) -> None:
        double = self.double
        index = len(double.executed)
        double.executed.append((statement, parameters))
        failure = double.fail_at.get(index)
        if failure is None:
            failure = next((e for prefix, e in double.fail_on.items() if statement.startswith(prefix)), None)
        if failure is not None:
            raise failure
        changed = _IDENTIFIED.match(statement)
        if changed and double.passwords:
            verb, user, password = changed.groups()
            double.passwords[user] = password
            if verb == "CREATE":
                double.dictionary.user(user)
        found = double.dictionary.answer(statement, parameters or {})
        self.rows = found if found is not None else double.rows(statement, parameters or {})

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


class RecordingConnection:
    def __init__(self, double: OracleDouble, user: str) -> None:
        self.double = double
        self.user = user
        self.version = double.version
        self.closed = False

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self.double)

    def close(self) -> None:
        self.closed = True
        self.double.closed_connections += 1


@dataclass
class OracleDouble:
    version: str = "19.3.0.0.0"
    dictionary: Dictionary = field(default_factory=Dictionary)
    rows: Callable[[str, dict[str, Any]], list[tuple[Any, ...]]] = lambda statement, binds: []
    passwords: dict[str, str] = field(default_factory=dict, repr=False)  # stored name -> password
    connect_error: Exception | None = None
    fail_at: dict[int, Exception] = field(default_factory=dict)
    fail_on: dict[str, Exception] = field(default_factory=dict)
    connects: list[dict[str, Any]] = field(default_factory=list, repr=False)
    executed: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    closed_connections: int = 0
    closed_cursors: int = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> OracleDouble:
        monkeypatch.setattr(oracledb, "connect", self.connect)
        return self

    def connect(self, **kwargs: Any) -> RecordingConnection:
        self.connects.append(kwargs)
        if self.connect_error is not None:
            raise self.connect_error
        user, password = kwargs["user"], kwargs["password"]
        if self.passwords and self.passwords.get(stored(user)) != password:
            raise ora_error(1017, "invalid credential or not authorized; logon denied")
        return RecordingConnection(self, user)

    @property
    def statements(self) -> list[str]:
        return [statement for statement, _ in self.executed]

    @property
    def logins(self) -> list[str]:
        return [kwargs["user"] for kwargs in self.connects]
