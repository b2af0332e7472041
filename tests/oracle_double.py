"""A recording stand-in for python-oracledb at the driver boundary: no Oracle server runs here.

`OracleDouble.install(monkeypatch)` replaces `oracledb.connect`. Every connect call (its keyword
arguments), every statement and its binds are recorded in order. Queries of the dictionary views
the Oracle engine reads are answered from a `Dictionary` (including the role hierarchy, as
CONNECT BY walks it), the test query `SELECT USER ...` with the logged-in user, and any other
query from `rows` when given (which then answers the test query too). The double can be
scripted to refuse logins, to fail a given statement (by its index among all statements
executed, or by a prefix) with a real oracledb error, and to report a given server version.

With `passwords` given, it also keeps the one piece of server state a rotation needs to be
driven end to end: who logs in with which password. `CREATE USER` / `ALTER USER ... IDENTIFIED
BY` change it (CREATE USER adds the user to the dictionary), and GRANT and REVOKE, as the
rotator writes them, change the grant views, so that a second rotation sees what the first made.
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
_GRANT = re.compile(
    r'(?P<verb>GRANT|REVOKE) (?P<what>[A-Z ]+?|"[^"]+")(?: \((?P<columns>[^)]+)\))?'
    r'(?: ON (?:(?P<kind>DIRECTORY) "(?P<directory>[^"]+)"|"(?P<owner>[^"]+)"\."(?P<name>[^"]+)"))?'
    r' (?:TO|FROM) "(?P<user>[^"]+)"(?P<option> WITH (?:ADMIN|GRANT) OPTION)?\Z'
)


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
    administrative: list[tuple[str, str]] = field(default_factory=list)  # V$PWFILE_USERS: user, SYSDBA
    proxies: list[tuple[str, str]] = field(default_factory=list)  # DBA_PROXIES: proxy, client
    objects: dict[str, int] = field(default_factory=dict)  # DBA_OBJECTS: owner -> how many

    def user(
        self, name: str, profile: str = "DEFAULT", tablespace: str = "USERS", temp: str = "TEMP"
    ) -> None:
        self.users[name] = (profile, tablespace, temp)

    def apply(self, statement: str) -> None:
        """What a GRANT or REVOKE the rotator sends does to the grant views (others: nothing)."""
        found = _GRANT.match(statement)
        if found is None:
            return
        g = found.groupdict()
        user, what, option = g["user"], g["what"], "YES" if g["option"] else "NO"
        if g["kind"] or g["owner"]:
            owner, name, kind = (
                ("SYS", g["directory"], "DIRECTORY") if g["kind"] else (g["owner"], g["name"], "TABLE")
            )
            if g["verb"] == "REVOKE":  # a table-wide REVOKE takes the column grants too
                self.tab_privs[:] = [r for r in self.tab_privs if r[:4] != (user, owner, name, what)]
                self.col_privs[:] = [
                    r for r in self.col_privs if (r[:3], r[4]) != ((user, owner, name), what)
                ]
            elif g["columns"]:
                for column in g["columns"].split(", "):
                    self.col_privs.append((user, owner, name, column.strip('"'), what, option))
            else:
                self.tab_privs.append((user, owner, name, what, option, kind))
        elif what.startswith('"'):
            role = what.strip('"')
            self.role_privs[:] = [r for r in self.role_privs if r[:2] != (user, role)]
            if g["verb"] == "GRANT":
                self.role_privs.append((user, role, option, "YES"))
        else:
            self.sys_privs[:] = [r for r in self.sys_privs if r[:2] != (user, what)]
            if g["verb"] == "GRANT":
                self.sys_privs.append((user, what, option))

    def roles_of(self, name: str) -> list[tuple[str, str, str]]:
        """START WITH grantee = name CONNECT BY NOCYCLE PRIOR granted_role = grantee, DISTINCT."""
        found: list[tuple[str, str, str]] = []
        reached, todo = {name}, [name]
        while todo:
            grantee = todo.pop(0)
            for holder, role, admin, _ in self.role_privs:
                if holder == grantee and (holder, role, admin) not in found:
                    found.append((holder, role, admin))
                    if role not in reached:
                        reached.add(role)
                        todo.append(role)
        return found

    def admin_power(self, name: str) -> list[tuple[Any, ...]]:
        roles = self.roles_of(name)
        holders = {name} | {role for _, role, _ in roles}
        return [("ROLE", role, admin, grantee) for grantee, role, admin in roles] + [
            ("PRIVILEGE", privilege, admin, grantee)
            for grantee, privilege, admin in self.sys_privs
            if grantee in holders
        ]

    def account(self, name: str) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = [
            ("ADMINISTRATIVE", p) for user, p in self.administrative if user == name
        ]
        rows += [("PROXY", client) for proxy, client in self.proxies if proxy == name]
        return rows + ([("OBJECTS", str(self.objects[name]))] if self.objects.get(name) else [])

    def answer(self, statement: str, binds: dict[str, Any]) -> list[tuple[Any, ...]] | None:
        grantees = {binds.get("source"), binds.get("clone")}
        if "CONNECT BY NOCYCLE PRIOR granted_role = grantee" in statement:
            assert binds == {"name": binds["name"], "grantee": binds["name"]}
            return self.admin_power(binds["name"])
        if "FROM v$pwfile_users" in statement:
            assert binds == {"name": binds["name"], "proxy": binds["name"], "owner": binds["name"]}
            return self.account(binds["name"])
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
    def __init__(self, double: OracleDouble, user: str) -> None:
        self.double = double
        self.user = user
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
        if double.passwords:
            double.dictionary.apply(statement)
        found = double.dictionary.answer(statement, parameters or {})
        if found is None and double.rows is not None:
            found = double.rows(statement, parameters or {})
        if found is None and statement.startswith("SELECT USER, "):
            found = [(stored(self.user), 2)]
        self.rows = found or []

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
        return RecordingCursor(self.double, self.user)

    def close(self) -> None:
        self.closed = True
        self.double.closed_connections += 1


@dataclass
class OracleDouble:
    version: str = "19.3.0.0.0"
    dictionary: Dictionary = field(default_factory=Dictionary)
    rows: Callable[[str, dict[str, Any]], list[tuple[Any, ...]]] | None = None
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
