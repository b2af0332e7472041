"""SQL Server's names, literals and grants as T-SQL text. No driver here: the engine runs the
queries and hands over their rows.

ALTER LOGIN and CREATE LOGIN take no parameter for the login or the password, so names are
bracket-quoted with `]` doubled (QUOTENAME's rule) and passwords are N'' literals with `'`
doubled; what cannot be quoted safely is refused. Catalog lookups bind their values.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rotators.errors import ConfigurationError, PasswordChangeError, SecretFormatError, shown

MAX_NAME = 128  # sysname: nvarchar(128)
MAX_PASSWORD = 128
_KEYWORDS = re.compile(r"[A-Z]+( [A-Z]+)*\Z")  # permission names come from the catalog; checked anyway

# The logins and database users a master works on: SQL logins only (ALTER LOGIN ... PASSWORD).
LOGIN_SQL = (
    "SELECT default_database_name, default_language_name, is_policy_checked, is_expiration_checked "
    "FROM sys.sql_logins WHERE name = %(name)s"
)
PRINCIPAL_SQL = "SELECT type_desc FROM sys.server_principals WHERE name = %(name)s"
SERVER_ROLES_SQL = (
    "SELECT m.name, r.name FROM sys.server_role_members rm "
    "JOIN sys.server_principals r ON r.principal_id = rm.role_principal_id "
    "JOIN sys.server_principals m ON m.principal_id = rm.member_principal_id "
    "WHERE m.name IN (%(source)s, %(clone)s)"
)
SERVER_PERMISSIONS_SQL = (
    "SELECT g.name, p.state_desc, p.permission_name, p.class_desc, t.name, t.type "
    "FROM sys.server_permissions p "
    "JOIN sys.server_principals g ON g.principal_id = p.grantee_principal_id "
    "LEFT JOIN sys.server_principals t ON p.class = 101 AND t.principal_id = p.major_id "
    "WHERE g.name IN (%(source)s, %(clone)s)"
)
DATABASE_ROLES_SQL = (
    "SELECT m.name, r.name FROM sys.database_role_members rm "
    "JOIN sys.database_principals r ON r.principal_id = rm.role_principal_id "
    "JOIN sys.database_principals m ON m.principal_id = rm.member_principal_id "
    "WHERE m.name IN (%(source)s, %(clone)s)"
)
DATABASE_PERMISSIONS_SQL = (
    "SELECT g.name, p.state_desc, p.permission_name, p.class_desc, "
    "COALESCE(SCHEMA_NAME(o.schema_id), SCHEMA_NAME(t.schema_id)), COALESCE(o.name, s.name, d.name, t.name), "
    "c.name, d.type FROM sys.database_permissions p "
    "JOIN sys.database_principals g ON g.principal_id = p.grantee_principal_id "
    "LEFT JOIN sys.objects o ON p.class = 1 AND o.object_id = p.major_id "
    "LEFT JOIN sys.columns c ON p.class = 1 AND p.minor_id <> 0 AND c.object_id = p.major_id "
    "AND c.column_id = p.minor_id "
    "LEFT JOIN sys.schemas s ON p.class = 3 AND s.schema_id = p.major_id "
    "LEFT JOIN sys.database_principals d ON p.class = 4 AND d.principal_id = p.major_id "
    "LEFT JOIN sys.types t ON p.class = 6 AND t.user_type_id = p.major_id "
    "WHERE g.name IN (%(source)s, %(clone)s)"
)
# The online databases where a login may have a user (not tempdb, nor RDS's own rdsadmin), and
# whether the master may open each.
DATABASES_SQL = (
    "SELECT name, HAS_DBACCESS(name) FROM sys.databases WHERE state = 0 AND database_id <> 2 "
    "AND name <> 'rdsadmin' ORDER BY name"
)


def mapped_users_sql(database: str) -> str:
    """The users two logins are mapped to in `database`: (login, user, default schema)."""
    where = quote_name(database).replace("%", "%%")  # the driver %-formats a statement with binds
    return (  # the one name in the text is quoted by quote_name
        f"SELECT sp.name, dp.name, dp.default_schema_name FROM {where}.sys.database_principals dp "  # noqa: S608
        "JOIN sys.server_principals sp ON sp.sid = dp.sid WHERE sp.name IN (%(source)s, %(clone)s)"
    )


# What a login holds, through server roles held in turn, and the databases it owns. A UNION ALL of
# names from several scopes takes one collation (Msg 451 otherwise): the database's.
# (kind, role, permission or database, state, holder).
SERVER_POWER_SQL = """WITH held AS (
  SELECT principal_id, name FROM sys.server_principals WHERE name = %(name)s
  UNION ALL
  SELECT r.principal_id, r.name FROM sys.server_role_members rm
  JOIN held h ON h.principal_id = rm.member_principal_id
  JOIN sys.server_principals r ON r.principal_id = rm.role_principal_id
)
SELECT DISTINCT 'ROLE', r.name COLLATE DATABASE_DEFAULT, 'GRANT', h.name COLLATE DATABASE_DEFAULT FROM held h
JOIN sys.server_role_members rm ON rm.member_principal_id = h.principal_id
JOIN sys.server_principals r ON r.principal_id = rm.role_principal_id
UNION ALL
SELECT DISTINCT 'PERMISSION', p.permission_name COLLATE DATABASE_DEFAULT,
  p.state_desc COLLATE DATABASE_DEFAULT, h.name COLLATE DATABASE_DEFAULT FROM held h
JOIN sys.server_permissions p ON p.grantee_principal_id = h.principal_id AND p.state IN ('G', 'W')
UNION ALL
SELECT 'OWNER', d.name COLLATE DATABASE_DEFAULT, 'GRANT', %(name)s FROM sys.databases d
JOIN sys.server_principals sp ON sp.sid = d.owner_sid WHERE sp.name = %(name)s"""
# The same in the session's database, for the user the login is mapped to: permissions on the
# database (class 0) and on its users and roles (class 4: IMPERSONATE ON USER::dbo is db_owner's power).
DATABASE_POWER_SQL = """WITH held AS (
  SELECT dp.principal_id, dp.name FROM sys.database_principals dp
  JOIN sys.server_principals sp ON sp.sid = dp.sid WHERE sp.name = %(name)s
  UNION ALL
  SELECT r.principal_id, r.name FROM sys.database_role_members rm
  JOIN held h ON h.principal_id = rm.member_principal_id
  JOIN sys.database_principals r ON r.principal_id = rm.role_principal_id
)
SELECT DISTINCT 'ROLE', r.name COLLATE DATABASE_DEFAULT, 'GRANT', h.name COLLATE DATABASE_DEFAULT FROM held h
JOIN sys.database_role_members rm ON rm.member_principal_id = h.principal_id
JOIN sys.database_principals r ON r.principal_id = rm.role_principal_id
UNION ALL
SELECT DISTINCT 'PERMISSION', p.permission_name COLLATE DATABASE_DEFAULT,
  p.state_desc COLLATE DATABASE_DEFAULT, h.name COLLATE DATABASE_DEFAULT FROM held h
JOIN sys.database_permissions p ON p.grantee_principal_id = h.principal_id AND p.class IN (0, 4)
AND p.state IN ('G', 'W')"""
# Schemas and objects a database user owns (an owner holds CONTROL over them without a grant).
OWNED_SQL = (
    "SELECT (SELECT COUNT(*) FROM sys.schemas WHERE principal_id = DATABASE_PRINCIPAL_ID(%(user)s)) "
    "+ (SELECT COUNT(*) FROM sys.objects WHERE principal_id = DATABASE_PRINCIPAL_ID(%(user)s))"
)
# Server roles and permissions that administer logins, the server or every database.
ADMIN_SERVER_ROLES = frozenset({
    "sysadmin", "securityadmin", "serveradmin", "setupadmin", "processadmin", "diskadmin", "dbcreator",
    "##MS_LoginManager##", "##MS_DatabaseManager##", "##MS_ServerStateManager##",
})  # fmt: skip
ADMIN_SERVER_PERMISSIONS = frozenset({
    "CONTROL SERVER", "ALTER ANY LOGIN", "ALTER ANY SERVER ROLE", "IMPERSONATE ANY LOGIN", "IMPERSONATE",
    "CONTROL", "ALTER", "ALTER ANY CREDENTIAL", "ALTER ANY DATABASE", "CREATE ANY DATABASE",
    "ALTER SERVER STATE", "ALTER SETTINGS", "ALTER TRACE", "ALTER ANY EVENT SESSION", "ALTER ANY ENDPOINT",
    "ALTER ANY LINKED SERVER", "ALTER ANY CONNECTION", "EXTERNAL ACCESS ASSEMBLY", "UNSAFE ASSEMBLY",
    "AUTHENTICATE SERVER", "SHUTDOWN", "ALTER RESOURCES", "ADMINISTER BULK OPERATIONS",
    "SELECT ALL USER SECURABLES", "TAKE OWNERSHIP",
})  # fmt: skip
ADMIN_DATABASE_ROLES = frozenset({"db_owner", "db_securityadmin", "db_accessadmin", "db_ddladmin"})
ADMIN_DATABASE_PERMISSIONS = frozenset({
    "CONTROL", "ALTER", "ALTER ANY USER", "ALTER ANY ROLE", "ALTER ANY APPLICATION ROLE",
    "ALTER ANY SCHEMA", "IMPERSONATE", "TAKE OWNERSHIP", "AUTHENTICATE", "ALTER ANY DATABASE DDL TRIGGER",
    "ALTER ANY ASSEMBLY", "ALTER ANY CERTIFICATE", "ALTER ANY DATABASE AUDIT",
})  # fmt: skip
# sys.database_principals.type of the principals a permission may be on (class DATABASE_PRINCIPAL).
_PRINCIPAL_KINDS = {"R": "ROLE", "A": "APPLICATION ROLE"}  # any other type is a user


def quotable(text: str) -> bool:
    return bool(text) and not any(unicodedata.category(c) == "Cc" for c in text)


def quote_name(name: str) -> str:
    """`[name]`, `]` doubled: what QUOTENAME(name) returns."""
    if not quotable(name) or len(name) > MAX_NAME:
        raise SecretFormatError(
            f"{shown(name)} is not a SQL Server name: 1 to {MAX_NAME} characters, no control character"
        )
    return "[" + name.replace("]", "]]") + "]"


def quote_password(password: str) -> str:
    """N'...', `'` doubled: T-SQL binds no password in CREATE LOGIN or ALTER LOGIN."""
    if not quotable(password) or len(password) > MAX_PASSWORD:
        raise ConfigurationError(
            f"A SQL Server password holds 1 to {MAX_PASSWORD} characters and no control character: set "
            "PASSWORD_LENGTH at most 128 and fix the stored one"
        )
    return "N'" + password.replace("'", "''") + "'"


class Permission(NamedTuple):
    """One row of sys.server_permissions or sys.database_permissions, as GRANT, DENY and REVOKE
    need it: `on` is the ON clause (empty for the server or the database itself)."""

    state: str  # GRANT, GRANT_WITH_GRANT_OPTION or DENY
    permission: str
    on: str = ""
    column: str = ""

    def text(self, grantee: str = "") -> str:
        """`GRANT SELECT (col) ON OBJECT::[s].[t] TO grantee WITH GRANT OPTION`, or DENY."""
        verb = "DENY" if self.state == "DENY" else "GRANT"
        column = f" ({self.column})" if self.column else ""
        target = f" ON {self.on}" if self.on else ""
        to = f" TO {grantee}" if grantee else ""
        option = " WITH GRANT OPTION" if self.state == "GRANT_WITH_GRANT_OPTION" else ""
        return f"{verb} {self.permission}{column}{target}{to}{option}"

    def revoke(self, grantee: str) -> str:
        """REVOKE takes a GRANT or a DENY away; CASCADE also what was granted on with the option."""
        column = f" ({self.column})" if self.column else ""
        target = f" ON {self.on}" if self.on else ""
        cascade = " CASCADE" if self.state == "GRANT_WITH_GRANT_OPTION" else ""
        return f"REVOKE {self.permission}{column}{target} FROM {grantee}{cascade}"


@dataclass
class Privileges:
    """Role memberships and permissions of one principal (a login, or its database user)."""

    roles: set[str] = field(default_factory=set)
    permissions: set[Permission] = field(default_factory=set)


def fold(name: str) -> str:
    """Who a name is to SQL Server's default collation: `Admin ` is `admin`."""
    return name.rstrip(" ").casefold()


def _entry(found: dict[str, Privileges], name: object) -> Privileges | None:
    """The privileges kept for `name`: the catalog answers with the stored name (`app`), the
    caller asked with the secret's spelling (`APP `)."""
    return next((held for key, held in found.items() if fold(key) == fold(str(name))), None)


def read_roles(rows: Iterable[Sequence[Any]], found: dict[str, Privileges]) -> None:
    for member, role in rows:
        if (held := _entry(found, member)) is not None:
            held.roles.add(str(role))


def read_server_permissions(rows: Iterable[Sequence[Any]], found: dict[str, Privileges]) -> None:
    for grantee, state, permission, kind, target, target_type in rows:
        if (held := _entry(found, grantee)) is None:
            continue
        if kind == "SERVER":
            on = ""
        elif kind == "SERVER_PRINCIPAL":
            on = f"{'SERVER ROLE' if str(target_type).strip() == 'R' else 'LOGIN'}::{quote_name(target)}"
        else:
            raise PasswordChangeError(
                f"{shown(grantee)} holds {_keyword(permission)} on a {kind}, which the rotator does not "
                "copy: grant it to the clone by hand, or rotate this secret as a single user"
            )
        held.permissions.add(Permission(_state(state), _keyword(permission), on))


def read_database_permissions(rows: Iterable[Sequence[Any]], found: dict[str, Privileges]) -> None:
    for grantee, state, permission, kind, schema, name, column, principal_type in rows:
        if (held := _entry(found, grantee)) is None:
            continue
        if kind == "DATABASE":
            on = ""
        elif kind == "OBJECT_OR_COLUMN":
            on = f"OBJECT::{quote_name(schema)}.{quote_name(name)}"
        elif kind == "SCHEMA":
            on = f"SCHEMA::{quote_name(name)}"
        elif kind == "DATABASE_PRINCIPAL":
            on = f"{_PRINCIPAL_KINDS.get(str(principal_type).strip(), 'USER')}::{quote_name(name)}"
        elif kind == "TYPE":
            on = f"TYPE::{quote_name(schema)}.{quote_name(name)}"
        else:
            raise PasswordChangeError(
                f"{shown(grantee)} holds {_keyword(permission)} on a {kind}, which the rotator does not "
                "copy: grant it to the clone by hand, or rotate this secret as a single user"
            )
        held.permissions.add(
            Permission(_state(state), _keyword(permission), on, quote_name(column) if column else "")
        )


def sync(user: str, wanted: Privileges, held: Privileges, *, server: bool) -> list[str]:
    """Statements that give the principal `user` (quoted) the roles and permissions of `wanted`
    and nothing else: first what it holds beyond them goes, then what it lacks is given. Server
    permissions are granted, denied and revoked in master (in_master), wherever the session is."""
    verb = "ALTER SERVER ROLE" if server else "ALTER ROLE"
    scope = in_master if server else str
    drop = [f"{verb} {quote_name(role)} DROP MEMBER {user}" for role in sorted(held.roles - wanted.roles)]
    add = [f"{verb} {quote_name(role)} ADD MEMBER {user}" for role in sorted(wanted.roles - held.roles)]
    revokes = [scope(extra.revoke(user)) for extra in sorted(held.permissions - wanted.permissions)]
    grants = [scope(lacking.text(user)) for lacking in sorted(wanted.permissions - held.permissions)]
    return drop + revokes + add + grants


def in_master(statement: str) -> str:
    """`statement` run in the master database through its sp_executesql: SQL Server grants,
    denies and revokes server-scope permissions only there (error 4621 in any other database),
    and the master's session is in the secret's database. No password is ever in it."""
    return "EXEC [master].[sys].[sp_executesql] N'" + statement.replace("'", "''") + "'"


def beyond(held: Privileges, other: Privileges) -> list[str]:
    """What `held` may do that `other` may not, in words: roles and grants `other` lacks (a grant
    WITH GRANT OPTION covers the plain one), and DENYs of `other` that `held` lacks."""
    found = [f"role {role}" for role in sorted(held.roles - other.roles)]
    granted = {(p.permission, p.on, p.column) for p in other.permissions if p.state != "DENY"}
    with_option = {(p.permission, p.on, p.column) for p in other.permissions if p.state.endswith("OPTION")}
    for p in sorted(held.permissions):
        key = (p.permission, p.on, p.column)
        if p.state != "DENY" and key not in (with_option if p.state.endswith("OPTION") else granted):
            found.append(p.text())
    denied = {(p.permission, p.on, p.column) for p in held.permissions if p.state == "DENY"}
    found += [
        f"not {p.text()}"
        for p in sorted(other.permissions)
        if p.state == "DENY" and (p.permission, p.on, p.column) not in denied
    ]
    return found


def administrative(rows: Iterable[Sequence[Any]], name: str, *, server: bool) -> set[str]:
    """Administrative roles and permissions in the rows of SERVER_POWER_SQL or DATABASE_POWER_SQL,
    held directly or through roles, and anything WITH GRANT OPTION."""
    roles, permissions = (
        (ADMIN_SERVER_ROLES, ADMIN_SERVER_PERMISSIONS)
        if server
        else (ADMIN_DATABASE_ROLES, ADMIN_DATABASE_PERMISSIONS)
    )
    found = set()
    for kind, what, state, holder in rows:
        through = f" (through role {holder})" if fold(str(holder)) != fold(name) and kind != "OWNER" else ""
        if kind == "OWNER":
            found.add(f"ownership of database {what}")
        elif kind == "ROLE" and what in roles:
            found.add(f"{'server ' if server else ''}role {what}{through}")
        elif kind == "PERMISSION" and (what in permissions or state == "GRANT_WITH_GRANT_OPTION"):
            option = " WITH GRANT OPTION" if state == "GRANT_WITH_GRANT_OPTION" else ""
            found.add(f"{what}{option}{through}")
    return found


def _state(state: str) -> str:
    if state not in ("GRANT", "GRANT_WITH_GRANT_OPTION", "DENY"):
        raise PasswordChangeError(f"Unexpected permission state {state!r} in the SQL Server catalog")
    return state


def _keyword(permission: str) -> str:
    if not _KEYWORDS.match(permission):
        raise PasswordChangeError(f"Unexpected permission name {permission!r} in the SQL Server catalog")
    return permission
