"""Oracle's grants as the DBA_ views tell them: read into values, compared between the source
and its clone, named when administrative, and synced with REVOKE and GRANT statements. No driver
here: the engine runs the queries and hands over their rows."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rotators.engines.oracle_names import quote
from rotators.errors import PasswordChangeError

_KEYWORDS = re.compile(r"[A-Z]+( [A-Z]+)*\Z")  # privilege names come from the dictionary; check anyway
# Object types whose GRANT names the object without an owner, or with a keyword before it.
_UNOWNED_TYPES = frozenset({"DIRECTORY", "EDITION", "USER"})
_KEYWORD_TYPES = frozenset({"JAVA SOURCE", "JAVA RESOURCE", "MINING MODEL", "SQL TRANSLATION PROFILE"})
SYS_PRIVS = "SELECT grantee, privilege, admin_option FROM dba_sys_privs WHERE grantee IN (:source, :clone)"
ROLE_PRIVS = (
    "SELECT grantee, granted_role, admin_option, default_role FROM dba_role_privs "
    "WHERE grantee IN (:source, :clone)"
)
TAB_PRIVS = (
    "SELECT grantee, owner, table_name, privilege, grantable, type FROM dba_tab_privs "
    "WHERE grantee IN (:source, :clone)"
)
COL_PRIVS = (
    "SELECT grantee, owner, table_name, column_name, privilege, grantable FROM dba_col_privs "
    "WHERE grantee IN (:source, :clone)"
)
# Every role a user holds, directly or through other roles, and every system privilege of the
# user and of those roles: (kind, role or privilege, admin option, the grantee that holds it).
ADMIN_POWER_SQL = """WITH held_roles AS (
  SELECT DISTINCT grantee, granted_role, admin_option FROM dba_role_privs
  START WITH grantee = :name CONNECT BY NOCYCLE PRIOR granted_role = grantee
)
SELECT 'ROLE', granted_role, admin_option, grantee FROM held_roles
UNION ALL
SELECT 'PRIVILEGE', privilege, admin_option, grantee FROM dba_sys_privs
WHERE grantee = :grantee OR grantee IN (SELECT granted_role FROM held_roles)"""
# What a user has besides grants: administrative privileges (only in the password file), proxy
# rights to log in as other users, and objects of its own. Rows: (kind, what).
ACCOUNT_SQL = """SELECT 'ADMINISTRATIVE', privilege FROM v$pwfile_users
UNPIVOT (held FOR privilege IN (sysdba AS 'SYSDBA', sysoper AS 'SYSOPER', sysasm AS 'SYSASM',
  sysbackup AS 'SYSBACKUP', sysdg AS 'SYSDG', syskm AS 'SYSKM'))
WHERE username = :name AND held = 'TRUE'
UNION ALL
SELECT 'PROXY', client FROM dba_proxies WHERE proxy = :proxy
UNION ALL
SELECT 'OBJECTS', TO_CHAR(COUNT(*)) FROM dba_objects WHERE owner = :owner HAVING COUNT(*) > 0"""
# System privileges that administer users, grants or the server, or that run code with another
# user's rights (a known way to all of those). Held WITH ADMIN OPTION, any privilege counts too.
ADMIN_PRIVILEGES = frozenset({
    "ALTER USER", "CREATE USER", "DROP USER", "BECOME USER", "INHERIT ANY PRIVILEGES",
    "GRANT ANY PRIVILEGE", "GRANT ANY ROLE", "GRANT ANY OBJECT PRIVILEGE", "ALTER ANY ROLE",
    "DROP ANY ROLE", "ALTER SYSTEM", "ALTER DATABASE", "ADMINISTER DATABASE TRIGGER",
    "SYSDBA", "SYSOPER", "SYSASM", "SYSBACKUP", "SYSDG", "SYSKM", "SELECT ANY DICTIONARY",
    "CREATE ANY PROCEDURE", "ALTER ANY PROCEDURE", "EXECUTE ANY PROCEDURE", "CREATE ANY TRIGGER",
    "CREATE ANY JOB", "CREATE EXTERNAL JOB", "CREATE ANY DIRECTORY",
})  # fmt: skip
# Roles that administer the database (RDS_MASTER_ROLE only where RDS made it).
ADMIN_ROLES = frozenset({
    "DBA", "IMP_FULL_DATABASE", "EXP_FULL_DATABASE", "DATAPUMP_IMP_FULL_DATABASE",
    "DATAPUMP_EXP_FULL_DATABASE", "RDS_MASTER_ROLE",
})  # fmt: skip
Rows = Callable[[str], Sequence[tuple[Any, ...]]]  # a query's rows, with the binds of the caller


class Grant(NamedTuple):
    """One privilege as GRANT and REVOKE need it: `what` and `on` are already SQL."""

    what: str
    on: str | None
    option: bool  # WITH ADMIN OPTION (system privileges, roles) or WITH GRANT OPTION (objects)
    admin: bool  # which of the two


@dataclass
class Privileges:
    """A user's grants as read from DBA_SYS_PRIVS, DBA_ROLE_PRIVS, DBA_TAB_PRIVS and DBA_COL_PRIVS."""

    grants: set[Grant] = field(default_factory=set)
    columns: dict[tuple[str, str], set[tuple[str, bool]]] = field(default_factory=lambda: defaultdict(set))
    roles: dict[str, bool] = field(default_factory=dict)  # role -> is a default role


def read_privileges(rows: Rows, source: str, clone: str) -> tuple[Privileges, Privileges]:
    """The grants of `source` and `clone` (stored names), from the four DBA_*_PRIVS queries; `rows`
    runs one with the binds :source and :clone."""
    found = {source: Privileges(), clone: Privileges()}
    for grantee, privilege, admin in rows(SYS_PRIVS):
        found[grantee].grants.add(Grant(_keyword(privilege), None, admin == "YES", True))
    for grantee, role, admin, default in rows(ROLE_PRIVS):
        found[grantee].grants.add(Grant(quote(role), None, admin == "YES", True))
        found[grantee].roles[role] = default == "YES"
    for grantee, owner, name, privilege, grantable, kind in rows(TAB_PRIVS):
        on = _object(owner, name, kind)
        found[grantee].grants.add(Grant(_keyword(privilege), on, grantable == "YES", False))
    for grantee, owner, name, column, privilege, grantable in rows(COL_PRIVS):
        key = (_keyword(privilege), f"{quote(owner)}.{quote(name)}")
        found[grantee].columns[key].add((column, grantable == "YES"))
    return found[source], found[clone]


def administrative(name: str, rows: Sequence[tuple[Any, ...]]) -> set[str]:
    """Administrative roles and privileges in the rows of ADMIN_POWER_SQL for `name`, held
    directly or through roles, and anything WITH ADMIN OPTION. What comes through an
    administrative role is not listed again."""
    edges = [(grantee, role) for kind, role, _, grantee in rows if kind == "ROLE"]
    named = {name}  # holders reached without passing through an administrative role
    while grown := {r for g, r in edges if g in named and r not in ADMIN_ROLES} - named:
        named |= grown
    found = set()
    for kind, what, admin, grantee in rows:
        is_admin = admin == "YES" or what in (ADMIN_ROLES if kind == "ROLE" else ADMIN_PRIVILEGES)
        if not is_admin or grantee not in named:  # else the administrative role names it
            continue
        text = f"role {what}" if kind == "ROLE" else str(what)
        text += " WITH ADMIN OPTION" if admin == "YES" else ""
        found.add(text + (f" (through role {grantee})" if grantee != name else ""))
    return found


def sync(user: str, wanted: Privileges, held: Privileges) -> list[str]:
    """REVOKE what the clone holds beyond the source, then GRANT what it lacks. A column
    privilege can only be revoked for the whole table, so a changed set is granted anew."""
    revoke_columns = {k for k in held.columns if held.columns[k] != wanted.columns.get(k, set())}
    # revoking a column privilege on a table also revokes that privilege on the whole table
    held_grants = {g for g in held.grants if g.admin or (g.what, g.on) not in revoke_columns}
    revokes = sorted(held_grants - wanted.grants, key=_order) + [
        Grant(what, on, option=False, admin=False) for what, on in sorted(revoke_columns)
    ]
    statements = [
        f"REVOKE {g.what} ON {g.on} FROM {user}" if g.on else f"REVOKE {g.what} FROM {user}" for g in revokes
    ]
    for grant in sorted(wanted.grants - held_grants, key=_order):
        target = f" ON {grant.on}" if grant.on else ""
        option = (" WITH ADMIN OPTION" if grant.admin else " WITH GRANT OPTION") if grant.option else ""
        statements.append(f"GRANT {grant.what}{target} TO {user}{option}")
    for (what, on), columns in sorted(wanted.columns.items()):
        if (what, on) in held.columns and (what, on) not in revoke_columns:
            continue
        for grantable in (False, True):
            chosen = sorted(c for c, g in columns if g == grantable)
            if chosen:
                listed = ", ".join(quote(c) for c in chosen)
                option = " WITH GRANT OPTION" if grantable else ""
                statements.append(f"GRANT {what} ({listed}) ON {on} TO {user}{option}")
    if wanted.roles:
        defaults = sorted(r for r, is_default in wanted.roles.items() if is_default)
        if len(defaults) == len(wanted.roles):
            statements.append(f"ALTER USER {user} DEFAULT ROLE ALL")
        elif not defaults:
            statements.append(f"ALTER USER {user} DEFAULT ROLE NONE")
        else:
            statements.append(f"ALTER USER {user} DEFAULT ROLE {', '.join(quote(r) for r in defaults)}")
    return statements


def beyond(held: Privileges, other: Privileges) -> list[str]:
    """What `held` grants that `other` does not, in words. A grant WITH ADMIN/GRANT OPTION covers
    the same grant without it; a table-wide object privilege covers its columns."""
    granted = {(g.what, g.on, g.admin) for g in other.grants}
    with_option = {(g.what, g.on, g.admin) for g in other.grants if g.option}
    found = [
        _grant_text(g)
        for g in sorted(held.grants, key=_order)
        if (g.what, g.on, g.admin) not in (with_option if g.option else granted)
    ]
    for (what, on), columns in sorted(held.columns.items()):
        theirs = other.columns.get((what, on), set())
        for column, grantable in sorted(columns):
            table_wide = (what, on, False) in (with_option if grantable else granted)
            if table_wide or (column, True) in theirs or (column, grantable) in theirs:
                continue
            found.append(f"{what} ({quote(column)}) ON {on}" + (" WITH GRANT OPTION" if grantable else ""))
    return found


def _grant_text(grant: Grant) -> str:
    text = f"role {grant.what[1:-1]}" if grant.what.startswith('"') else grant.what
    text += f" ON {grant.on}" if grant.on else ""
    if grant.option:
        text += " WITH ADMIN OPTION" if grant.admin else " WITH GRANT OPTION"
    return text


def _order(grant: Grant) -> tuple[int, str, str, bool]:
    """System privileges, then roles, then object grants, each by name."""
    rank = 2 if grant.on is not None else 1 if grant.what.startswith('"') else 0
    return (rank, grant.on or "", grant.what, grant.option)


def _keyword(privilege: str) -> str:
    if not _KEYWORDS.match(privilege):
        raise PasswordChangeError(f"Unexpected privilege name {privilege!r} in the Oracle dictionary")
    return privilege


def _object(owner: str, name: str, kind: str | None) -> str:
    if kind in _UNOWNED_TYPES:
        return f"{kind} {quote(name)}"
    if kind in _KEYWORD_TYPES:
        return f"{kind} {quote(owner)}.{quote(name)}"
    return f"{quote(owner)}.{quote(name)}"
