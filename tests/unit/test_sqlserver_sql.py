"""SQL Server's names, literals and grants as T-SQL text (rotators.engines.sqlserver_sql), without a
driver: QUOTENAME's quoting and what cannot be quoted, GRANT/DENY/REVOKE text, the order in which
a clone is brought in line with its source, what counts as holding more, and what counts as
administrative power."""

from __future__ import annotations

import re

import pytest
from pytds.tds_base import tds_quote_id

from rotators.engines.sqlserver_sql import (
    DATABASE_POWER_SQL,
    MAX_NAME,
    SERVER_POWER_SQL,
    Permission,
    Privileges,
    administrative,
    beyond,
    fold,
    in_master,
    mapped_users_sql,
    quote_name,
    quote_password,
    read_database_permissions,
    read_roles,
    read_server_permissions,
    sync,
)
from rotators.errors import ConfigurationError, PasswordChangeError, SecretFormatError
from tests.sqlserver_double import _MAPPED_USERS, literal, unquote

# -- quoting -----------------------------------------------------------------------------------------
NAMES = [
    "app",
    "a]b",
    "]]",
    "[app]",
    "O'Neil",
    "app user",
    "Zoë-日本",
    "x;DROP LOGIN sa;--",
    "a" * MAX_NAME,
    " ",
]


@pytest.mark.parametrize("name", NAMES)
def test_quote_name_is_quotename(name: str) -> None:
    """`[name]` with `]` doubled, as QUOTENAME and python-tds's own tds_quote_id write it; the
    quoted text reads back as the name (the double parses it as the server would)."""
    quoted = quote_name(name)
    assert quoted == tds_quote_id(name) == "[" + name.replace("]", "]]") + "]"
    assert unquote(quoted) == name


@pytest.mark.parametrize(
    "name", ["", "a" * (MAX_NAME + 1), "a\x00b", "a\nb", "tab\there", "\x1b[31m", "del\x7f", "nel\x85"]
)
def test_quote_name_refuses_what_is_not_a_sysname(name: str) -> None:
    with pytest.raises(SecretFormatError, match=f"is not a SQL Server name: 1 to {MAX_NAME} characters"):
        quote_name(name)


@pytest.mark.parametrize(
    "password", ["plain-Pass-1", "it's", "''", "N'x'", "%(name)s %s %%", "Zoë-日本", "p" * 128]
)
def test_quote_password_is_an_n_literal_with_quotes_doubled(password: str) -> None:
    quoted = quote_password(password)
    assert quoted == "N'" + password.replace("'", "''") + "'"
    assert literal(quoted) == password


@pytest.mark.parametrize("password", ["", "p" * 129, "a\x00b", "line\nbreak", "nel\x85"])
def test_quote_password_refuses_what_sql_server_would_not_take_and_does_not_quote_it(password: str) -> None:
    with pytest.raises(ConfigurationError, match="1 to 128 characters and no control character") as caught:
        quote_password(password)
    assert not password or password not in str(caught.value)


def test_fold_is_sql_servers_comparison_of_names() -> None:
    assert fold("Admin ") == fold("admin") == fold("ADMIN   ")
    assert fold(" admin") != fold("admin"), "leading spaces count"
    assert fold("admin\t") != fold("admin"), "only trailing spaces are ignored"


# -- GRANT, DENY, REVOKE ------------------------------------------------------------------------------
ORDERS = "OBJECT::[sales].[orders]"


@pytest.mark.parametrize(
    ("permission", "text", "revoke"),
    [
        (Permission("GRANT", "CONNECT SQL"), "GRANT CONNECT SQL TO [x]", "REVOKE CONNECT SQL FROM [x]"),
        (
            Permission("DENY", "VIEW ANY DATABASE"),
            "DENY VIEW ANY DATABASE TO [x]",
            "REVOKE VIEW ANY DATABASE FROM [x]",
        ),
        (
            Permission("GRANT_WITH_GRANT_OPTION", "SELECT", ORDERS),
            f"GRANT SELECT ON {ORDERS} TO [x] WITH GRANT OPTION",
            f"REVOKE SELECT ON {ORDERS} FROM [x] CASCADE",
        ),
        (
            Permission("GRANT", "UPDATE", ORDERS, "[e]]mail]"),
            f"GRANT UPDATE ([e]]mail]) ON {ORDERS} TO [x]",
            f"REVOKE UPDATE ([e]]mail]) ON {ORDERS} FROM [x]",
        ),
        (
            Permission("DENY", "SELECT", ORDERS, "[pay]"),
            f"DENY SELECT ([pay]) ON {ORDERS} TO [x]",
            f"REVOKE SELECT ([pay]) ON {ORDERS} FROM [x]",
        ),
        (
            Permission("GRANT", "IMPERSONATE", "LOGIN::[a]]b]"),
            "GRANT IMPERSONATE ON LOGIN::[a]]b] TO [x]",
            "REVOKE IMPERSONATE ON LOGIN::[a]]b] FROM [x]",
        ),
    ],
)
def test_permission_text_and_revoke(permission: Permission, text: str, revoke: str) -> None:
    """REVOKE takes a GRANT or a DENY; a grantable permission needs CASCADE (SQL Server's error
    4611 otherwise), which also takes what the grantee granted on."""
    assert permission.text("[x]") == text
    assert permission.revoke("[x]") == revoke
    assert permission.text() == text.replace(" TO [x]", ""), "in words, for messages"


def test_in_master_runs_a_statement_in_master_as_one_literal() -> None:
    assert in_master("GRANT CONNECT SQL TO [O'Neil]") == (
        "EXEC [master].[sys].[sp_executesql] N'GRANT CONNECT SQL TO [O''Neil]'"
    )
    assert literal(in_master("DENY X TO [a'']]b]")[len("EXEC [master].[sys].[sp_executesql] ") :]) == (
        "DENY X TO [a'']]b]"
    )


def test_sync_drops_and_revokes_before_it_adds_and_grants() -> None:
    """What the principal holds beyond the source goes first (a grant option with CASCADE),
    then what it lacks is given; each list sorted, so a retry sends the same statements."""
    wanted = Privileges(
        {"reporting", "db_datareader"},
        {
            Permission("GRANT", "SELECT", ORDERS),
            Permission("DENY", "DELETE", ORDERS),
            Permission("GRANT", "EXECUTE", "SCHEMA::[sales]"),
        },
    )
    held = Privileges(
        {"db_datareader", "db_owner", "legacy"},
        {
            Permission("GRANT", "SELECT", ORDERS),
            Permission("GRANT_WITH_GRANT_OPTION", "EXECUTE", "SCHEMA::[sales]"),
            Permission("GRANT", "INSERT", ORDERS),
        },
    )
    assert sync("[c]", wanted, held, server=False) == [
        "ALTER ROLE [db_owner] DROP MEMBER [c]",
        "ALTER ROLE [legacy] DROP MEMBER [c]",
        f"REVOKE INSERT ON {ORDERS} FROM [c]",
        "REVOKE EXECUTE ON SCHEMA::[sales] FROM [c] CASCADE",
        "ALTER ROLE [reporting] ADD MEMBER [c]",
        f"DENY DELETE ON {ORDERS} TO [c]",
        "GRANT EXECUTE ON SCHEMA::[sales] TO [c]",
    ]
    assert sync("[c]", wanted, wanted, server=False) == []


def test_sync_of_a_login_runs_its_permissions_in_master() -> None:
    """Server-scope permissions are granted, denied and revoked only in master (error 4621);
    server role memberships are changed from any database."""
    wanted = Privileges(
        {"monitoring"}, {Permission("GRANT", "VIEW SERVER STATE"), Permission("DENY", "SHUTDOWN")}
    )
    held = Privileges({"bulkadmin"}, {Permission("GRANT", "ALTER TRACE")})
    assert sync("[O'c]", wanted, held, server=True) == [
        "ALTER SERVER ROLE [bulkadmin] DROP MEMBER [O'c]",
        "EXEC [master].[sys].[sp_executesql] N'REVOKE ALTER TRACE FROM [O''c]'",
        "ALTER SERVER ROLE [monitoring] ADD MEMBER [O'c]",
        "EXEC [master].[sys].[sp_executesql] N'DENY SHUTDOWN TO [O''c]'",
        "EXEC [master].[sys].[sp_executesql] N'GRANT VIEW SERVER STATE TO [O''c]'",
    ]


# -- holding more --------------------------------------------------------------------------------------
def test_beyond_names_roles_and_grants_the_other_lacks() -> None:
    held = Privileges({"r1", "r2"}, {Permission("GRANT", "SELECT", ORDERS), Permission("GRANT", "CONNECT")})
    other = Privileges({"r1"}, {Permission("GRANT", "CONNECT")})
    assert beyond(held, other) == ["role r2", f"GRANT SELECT ON {ORDERS}"]
    assert beyond(other, held) == []


def test_a_grant_option_covers_the_plain_grant_and_not_the_reverse() -> None:
    plain = Privileges(set(), {Permission("GRANT", "SELECT", ORDERS)})
    grantable = Privileges(set(), {Permission("GRANT_WITH_GRANT_OPTION", "SELECT", ORDERS)})
    assert beyond(plain, grantable) == []
    assert beyond(grantable, plain) == [f"GRANT SELECT ON {ORDERS} WITH GRANT OPTION"]


def test_a_missing_deny_is_more_power() -> None:
    """A DENY the other has and `held` lacks lets `held` do more; a DENY of `held` is no power."""
    denied = Privileges(set(), {Permission("DENY", "DELETE", ORDERS)})
    free = Privileges()
    assert beyond(free, denied) == [f"not DENY DELETE ON {ORDERS}"]
    assert beyond(denied, free) == []
    assert beyond(denied, denied) == []
    granted = Privileges(set(), {Permission("GRANT", "DELETE", ORDERS)})
    assert beyond(granted, denied) == [f"GRANT DELETE ON {ORDERS}", f"not DENY DELETE ON {ORDERS}"]


def test_a_column_grant_is_its_own_permission() -> None:
    column = Privileges(set(), {Permission("GRANT", "SELECT", ORDERS, "[pay]")})
    table = Privileges(set(), {Permission("GRANT", "SELECT", ORDERS)})
    assert beyond(table, column) == [f"GRANT SELECT ON {ORDERS}"]
    assert beyond(column, table) == [f"GRANT SELECT ([pay]) ON {ORDERS}"], "compared as held, not implied"


# -- administrative power ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rows", "found"),
    [
        ([("ROLE", "sysadmin", "GRANT", "app")], {"server role sysadmin"}),
        ([("ROLE", "sysadmin", "GRANT", "ops")], {"server role sysadmin (through role ops)"}),
        ([("ROLE", "sysadmin", "GRANT", "APP ")], {"server role sysadmin"}),
        ([("ROLE", "bulkadmin", "GRANT", "app"), ("ROLE", "monitoring", "GRANT", "app")], set()),
        ([("PERMISSION", "CONTROL SERVER", "GRANT", "app")], {"CONTROL SERVER"}),
        ([("PERMISSION", "IMPERSONATE", "GRANT", "ops")], {"IMPERSONATE (through role ops)"}),
        ([("PERMISSION", "CONNECT SQL", "GRANT", "app")], set()),
        (
            [("PERMISSION", "VIEW SERVER STATE", "GRANT_WITH_GRANT_OPTION", "app")],
            {"VIEW SERVER STATE WITH GRANT OPTION"},
        ),
        ([("OWNER", "sales", "GRANT", "app")], {"ownership of database sales"}),
    ],
)
def test_administrative_server_power(rows: list[tuple[str, str, str, str]], found: set[str]) -> None:
    assert administrative(rows, "app", server=True) == found


@pytest.mark.parametrize(
    ("rows", "found"),
    [
        ([("ROLE", "db_owner", "GRANT", "app")], {"role db_owner"}),
        ([("ROLE", "db_securityadmin", "GRANT", "team")], {"role db_securityadmin (through role team)"}),
        ([("ROLE", "db_datareader", "GRANT", "app"), ("ROLE", "db_datawriter", "GRANT", "app")], set()),
        ([("PERMISSION", "ALTER ANY USER", "GRANT", "app")], {"ALTER ANY USER"}),
        ([("PERMISSION", "CREATE TABLE", "GRANT", "app")], set()),
        (
            [("PERMISSION", "CREATE TABLE", "GRANT_WITH_GRANT_OPTION", "app")],
            {"CREATE TABLE WITH GRANT OPTION"},
        ),
        ([("ROLE", "sysadmin", "GRANT", "app")], set()),  # a server role's name means nothing here
    ],
)
def test_administrative_database_power(rows: list[tuple[str, str, str, str]], found: set[str]) -> None:
    assert administrative(rows, "app", server=False) == found


# -- reading the catalog -----------------------------------------------------------------------------------
def test_rows_are_read_for_the_names_asked_as_sql_server_compares_them() -> None:
    """The catalog answers with stored names (`app`); the secret may say `APP `."""
    found = {"APP ": Privileges(), "APP _clone": Privileges()}
    read_roles([("app", "r1"), ("someone", "r2"), ("app _CLONE", "r3")], found)
    read_server_permissions([("App", "GRANT", "VIEW SERVER STATE", "SERVER", None, None)], found)
    assert found["APP "] == Privileges({"r1"}, {Permission("GRANT", "VIEW SERVER STATE")})
    assert found["APP _clone"] == Privileges({"r3"})


@pytest.mark.parametrize(
    ("row", "permission"),
    [
        (("GRANT", "CONNECT SQL", "SERVER", None, None), Permission("GRANT", "CONNECT SQL")),
        (
            ("DENY", "IMPERSONATE", "SERVER_PRINCIPAL", "sa", "S"),
            Permission("DENY", "IMPERSONATE", "LOGIN::[sa]"),
        ),
        (
            ("GRANT", "VIEW DEFINITION", "SERVER_PRINCIPAL", "o]ps", "R "),
            Permission("GRANT", "VIEW DEFINITION", "SERVER ROLE::[o]]ps]"),
        ),
        (
            ("GRANT", "CONTROL", "SERVER_PRINCIPAL", "DOM\\x", "U"),
            Permission("GRANT", "CONTROL", "LOGIN::[DOM\\x]"),
        ),
    ],
)
def test_server_permissions_as_statements_need_them(row: tuple[object, ...], permission: Permission) -> None:
    found = {"app": Privileges()}
    read_server_permissions([("app", *row)], found)
    assert found["app"].permissions == {permission}


@pytest.mark.parametrize(
    ("row", "permission"),
    [
        (("GRANT", "CONNECT", "DATABASE", None, None, None, None), Permission("GRANT", "CONNECT")),
        (
            ("GRANT_WITH_GRANT_OPTION", "SELECT", "OBJECT_OR_COLUMN", "sales", "orders", None, None),
            Permission("GRANT_WITH_GRANT_OPTION", "SELECT", ORDERS),
        ),
        (
            ("DENY", "SELECT", "OBJECT_OR_COLUMN", "hr", "it's", "pay]", None),
            Permission("DENY", "SELECT", "OBJECT::[hr].[it's]", "[pay]]]"),
        ),
        (
            ("GRANT", "EXECUTE", "SCHEMA", None, "sales", None, None),
            Permission("GRANT", "EXECUTE", "SCHEMA::[sales]"),
        ),
        (
            ("GRANT", "IMPERSONATE", "DATABASE_PRINCIPAL", None, "dbo", None, "S"),
            Permission("GRANT", "IMPERSONATE", "USER::[dbo]"),
        ),
        (
            ("GRANT", "ALTER", "DATABASE_PRINCIPAL", None, "reporting", None, "R "),
            Permission("GRANT", "ALTER", "ROLE::[reporting]"),
        ),
        (
            ("GRANT", "CONTROL", "DATABASE_PRINCIPAL", None, "batch", None, "A"),
            Permission("GRANT", "CONTROL", "APPLICATION ROLE::[batch]"),
        ),
        (
            ("GRANT", "REFERENCES", "TYPE", "sales", "money2", None, None),
            Permission("GRANT", "REFERENCES", "TYPE::[sales].[money2]"),
        ),
    ],
)
def test_database_permissions_as_statements_need_them(
    row: tuple[object, ...], permission: Permission
) -> None:
    found = {"app": Privileges()}
    read_database_permissions([("app", *row)], found)
    assert found["app"].permissions == {permission}


@pytest.mark.parametrize(
    ("server", "row", "message"),
    [
        (
            True,
            ("GRANT", "CONNECT", "ENDPOINT", None, None),
            "'app' holds CONNECT on a ENDPOINT, which the rotator",
        ),
        (
            True,
            ("GRANT", "CONNECT", "AVAILABILITY GROUP", None, None),
            "holds CONNECT on a AVAILABILITY GROUP, which the rotator does not copy",
        ),
        (
            False,
            ("GRANT", "CONTROL", "CERTIFICATE", None, None, None, None),
            "holds CONTROL on a CERTIFICATE, which",
        ),
        (
            False,
            ("GRANT", "EXECUTE", "ASSEMBLY", None, None, None, None),
            "holds EXECUTE on a ASSEMBLY, which",
        ),
        (True, ("REVOKE", "CONNECT SQL", "SERVER", None, None), "Unexpected permission state 'REVOKE'"),
        (True, ("GRANT", "CONNECT SQL TO [x]; --", "SERVER", None, None), "Unexpected permission name"),
        (
            False,
            ("GRANT", "select", "DATABASE", None, None, None, None),
            "Unexpected permission name 'select'",
        ),
    ],
)
def test_what_the_rotator_cannot_copy_is_refused_by_name(
    server: bool, row: tuple[object, ...], message: str
) -> None:
    found = {"app": Privileges()}
    with pytest.raises(PasswordChangeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        (read_server_permissions if server else read_database_permissions)([("app", *row)], found)


def test_rows_of_other_principals_are_ignored() -> None:
    found = {"app": Privileges()}
    read_database_permissions([("other", "GRANT", "CONTROL", "CERTIFICATE", None, None, None, None)], found)
    read_server_permissions([("other", "GRANT", "CONNECT", "ENDPOINT", None, None)], found)
    assert found["app"] == Privileges()


# -- the users of two logins in any database -------------------------------------------------------------
@pytest.mark.parametrize("database", ["appdb", "a]b", "O'Neil db", "100%", "%(source)s", "%%s", "Zoë 日本"])
def test_mapped_users_sql_names_the_database_as_the_driver_will_send_it(database: str) -> None:
    """A three-part name, quoted, its `%` doubled: the statement goes with parameters, and the
    driver %-formats it (@P1, @P2 for the two logins) before the server reads the name."""
    sent = mapped_users_sql(database) % {"source": "@P1", "clone": "@P2"}
    found = _MAPPED_USERS.match(sent)
    assert found is not None and unquote(found["database"]) == database
    assert (found["first"], found["second"]) == ("@P1", "@P2")
    assert sent.startswith(
        f"SELECT sp.name, dp.name, dp.default_schema_name FROM {quote_name(database)}.sys."
    )


@pytest.mark.parametrize("database", ["", "a\nb", "x" * (MAX_NAME + 1)])
def test_mapped_users_sql_refuses_what_is_not_a_database_name(database: str) -> None:
    with pytest.raises(SecretFormatError):
        mapped_users_sql(database)


@pytest.mark.parametrize("query", [SERVER_POWER_SQL, DATABASE_POWER_SQL], ids=["server", "database"])
def test_union_all_columns_from_the_catalog_take_the_databases_collation(query: str) -> None:
    """Catalog names and *_desc columns of different scopes may differ in collation; a UNION ALL
    of them fails (Msg 451) unless each column read from a view says COLLATE DATABASE_DEFAULT
    (literals and parameters already have the database's)."""
    _, after_the_cte = query.split("\n)\n", 1)  # the CTE's own UNION ALL reads one view's names
    branches = after_the_cte.split("UNION ALL")
    assert len(branches) >= 2
    for branch in branches:
        columns = re.search(r"SELECT (?:DISTINCT )?(.*?)\s+FROM ", branch, re.S)
        assert columns is not None
        for text in columns[1].split(","):
            column = " ".join(text.split())
            if re.match(r"\w+\.\w+", column):
                assert column.endswith(" COLLATE DATABASE_DEFAULT"), column
