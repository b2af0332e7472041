"""A real Redshift cluster or Serverless workgroup, when ROTATORS_TEST_REDSHIFT_DSN names one.

    ROTATORS_TEST_REDSHIFT_DSN='redshift://admin:password@wg.123456789012.eu-west-1.redshift-serverless.amazonaws.com:5439/dev'

(optional query options: `sslrootcert`, `sslmode`, `ssl=false`). The account must be a superuser
(Redshift's admin user is). Everything the tests create is named `rot_<random>` and dropped.

Without it, the engine runs through redshift-connector against PostgreSQL (test_redshift_*.py)
wherever the SQL is common. What only a real Redshift confirms, and these tests exercise:

- the login itself: Redshift's startup parameters, its MD5/SHA-256 password exchange (PostgreSQL
  uses SCRAM), its `server_version`, and verify-full against the driver's bundled Redshift CAs;
- that Redshift accepts the generated passwords in `ALTER USER/CREATE USER ... PASSWORD '...'`
  (its 8-64 characters, upper/lower/digit rules; PostgreSQL accepts any password);
- `SELECT version()` reporting Redshift, which turns on the RBAC statements:
  `SELECT quote_ident(role_name), admin_option FROM svv_user_grants WHERE user_name = ...` and
  `GRANT ROLE <role> TO <clone> [WITH ADMIN OPTION]` (neither exists in PostgreSQL);
- Redshift's answers to the catalog queries (pg_group/grolist with `= ANY(...)`, pg_user,
  has_table_privilege/has_schema_privilege/has_database_privilege with a user name and a
  'schema.table' string, `left()`, `quote_ident()` on the leader node) and its acceptance of
  `ALTER GROUP ... ADD USER` and `GRANT ... ON TABLE/SCHEMA/DATABASE` from a superuser;
- the master's safety checks read from Redshift alone: pg_user's usesuper/usecreatedb, and the
  RBAC views svv_user_grants, svv_role_grants and svv_system_privileges (administrative roles,
  held directly or through other roles; a pre-existing clone with a role the original lacks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rotators.engines.redshift import RedshiftRotator, handler
from rotators.errors import PrivilegeError
from rotators.testing.secretsmanager import LocalSecretsManager
from tests.conftest import invoke
from tests.live import EngineServer, fresh_names, live_only, serve

DSN = "ROTATORS_TEST_REDSHIFT_DSN"
pytestmark = live_only(DSN, "no Redshift can run here: the engine runs against PostgreSQL through shims")


class LiveCluster(EngineServer[RedshiftRotator]):
    def __init__(self, sm: LocalSecretsManager) -> None:
        super().__init__(sm, handler, RedshiftRotator(), DSN, engine="redshift", port=5439, dbname="dev")

    def sql(self, statement: str, *args: Any) -> list[Any]:
        with self.rotator.connect(self.parsed, self.admin["username"], self.admin["password"]) as conn:
            cursor = conn.cursor()
            cursor.execute(statement, args or None)
            return [list(row) for row in cursor.fetchall()] if cursor.description else []


@pytest.fixture
def live(local_sm: LocalSecretsManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveCluster]:
    yield from serve(LiveCluster(local_sm), monkeypatch)


def test_single_user_on_a_real_cluster(live: LiveCluster, new_password: Callable[[], str]) -> None:
    [name], password = fresh_names(""), new_password()
    live.sql(f"CREATE USER {name} PASSWORD '{password}'")
    live.made.append(f"DROP USER IF EXISTS {name}")
    live.assert_rotates_alone(live.secret(name, password), name)


def test_alternating_users_on_a_real_cluster(live: LiveCluster, new_password: Callable[[], str]) -> None:
    name, group, role, schema = fresh_names("", "g", "r", "s")
    clone, password = f"{name}_clone", new_password()
    live.sql(f"CREATE USER {name} PASSWORD '{password}'")
    live.made += [f"DROP USER IF EXISTS {name}", f"DROP USER IF EXISTS {clone}"]
    live.sql(f"CREATE GROUP {group}")
    live.made.append(f"DROP GROUP {group}")
    live.sql(f"CREATE ROLE {role}")
    live.made.append(f"DROP ROLE {role} FORCE")
    live.sql(f"CREATE SCHEMA {schema}")
    live.sql(f"CREATE TABLE {schema}.t (id int)")
    live.made.append(f"DROP SCHEMA {schema} CASCADE")  # and with it every grant on it
    live.sql(f"GRANT USAGE ON SCHEMA {schema} TO {name}")
    live.sql(f"GRANT SELECT ON {schema}.t TO {name}")
    live.sql(f"ALTER GROUP {group} ADD USER {name}")
    live.sql(f"GRANT ROLE {role} TO {name}")
    arn = live.secret(name, password, master=live.master(name))

    current = live.rotate(arn)
    assert current["username"] == clone
    assert live.logs_in(name, password) and live.logs_in(clone, current["password"])
    members = (
        "SELECT g.groname FROM pg_group g, pg_user u WHERE u.usename = %s AND u.usesysid = ANY(g.grolist)"
    )
    assert live.sql(members, clone) == live.sql(members, name)
    assert live.sql("SELECT role_name FROM svv_user_grants WHERE user_name = %s", clone) == [[role]]
    assert live.sql(f"SELECT has_table_privilege(%s, '{schema}.t', 'SELECT')", clone) == [[True]]

    assert live.rotate(arn)["username"] == name
    assert live.logs_in(clone, current["password"]), "the clone keeps working"


def test_administrative_rbac_roles_and_a_clone_with_more_roles_are_refused_on_a_real_cluster(
    live: LiveCluster, new_password: Callable[[], str]
) -> None:
    """A user that holds CREATE USER through a role granted to its role is refused; so is a
    pre-existing clone that holds a role its original lacks. Nothing is created or changed."""
    boss, team, admins, app, extra = fresh_names("", "t", "a", "p", "x")
    boss_password, app_password, clone_password = new_password(), new_password(), new_password()
    live.made += [f"DROP USER IF EXISTS {name}" for name in (boss, f"{boss}_clone", app, f"{app}_clone")]
    for role in (team, admins, extra):
        live.sql(f"CREATE ROLE {role}")
        live.made.append(f"DROP ROLE {role} FORCE")
    live.sql(f"GRANT CREATE USER TO ROLE {admins}")
    live.sql(f"GRANT ROLE {admins} TO ROLE {team}")
    live.sql(f"CREATE USER {boss} PASSWORD '{boss_password}'")
    live.sql(f"GRANT ROLE {team} TO {boss}")
    live.sql(f"CREATE USER {app} PASSWORD '{app_password}'")
    live.sql(f"CREATE USER {app}_clone PASSWORD '{clone_password}'")
    live.sql(f"GRANT ROLE {extra} TO {app}_clone")
    master = live.master(boss)

    for name, password, refusal in (
        (boss, boss_password, f"administrative role '{admins}'"),
        (app, app_password, f"'{app}_clone' holds what '{app}' does not: role {extra}"),
    ):
        arn = live.secret(name, password, master=master)
        token = live.sm.start_rotation(arn)
        invoke(handler, arn, token, "createSecret")
        with pytest.raises(PrivilegeError, match=refusal):
            invoke(handler, arn, token, "setSecret")
        assert live.logs_in(name, password)
    assert live.sql("SELECT count(*) FROM pg_user WHERE usename = %s", f"{boss}_clone") == [[0]]
    assert live.logs_in(f"{app}_clone", clone_password), "the clone's password is unchanged"
    assert live.logs_in(live.admin["username"], live.admin["password"])
