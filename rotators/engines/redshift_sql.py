"""Redshift's SQL as data: the catalog queries the engine reads a user's power and privileges
with, Redshift's password rules, and the forms a password is sent in (never the password itself
where the server takes a hash). No driver here."""

from __future__ import annotations

import base64
import hashlib
import string

from scramp import ScramMechanism  # type: ignore[import-untyped]

from rotators.errors import SecretFormatError

# Redshift's password rules: 8 to 64 printable ASCII characters with an upper case letter, a
# lower case letter and a digit, and none of these.
FORBIDDEN_CHARACTERS = "'\"\\/@ "
MIN_LENGTH, MAX_LENGTH = 8, 64
# The object privileges a clone receives, where the original holds them by any route (its own
# grants, its groups, its roles, PUBLIC, or owning the object). Common to Redshift and PostgreSQL.
TABLE_PRIVILEGES = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), p.privilege
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     (SELECT 'SELECT' AS privilege UNION ALL SELECT 'INSERT' UNION ALL SELECT 'UPDATE'
      UNION ALL SELECT 'DELETE' UNION ALL SELECT 'REFERENCES') p
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname <> 'information_schema' AND left(n.nspname, 3) <> 'pg_'
  AND has_table_privilege(%s, quote_ident(n.nspname) || '.' || quote_ident(c.relname), p.privilege)
  AND NOT has_table_privilege(%s, quote_ident(n.nspname) || '.' || quote_ident(c.relname), p.privilege)
ORDER BY 1, 2
"""
SCHEMA_PRIVILEGES = """
SELECT quote_ident(n.nspname), p.privilege
FROM pg_namespace n, (SELECT 'USAGE' AS privilege UNION ALL SELECT 'CREATE') p
WHERE n.nspname <> 'information_schema' AND left(n.nspname, 3) <> 'pg_'
  AND has_schema_privilege(%s, n.nspname, p.privilege)
  AND NOT has_schema_privilege(%s, n.nspname, p.privilege)
ORDER BY 1, 2
"""
DATABASE_PRIVILEGES = """
SELECT quote_ident(current_database()), p.privilege
FROM (SELECT 'CREATE' AS privilege UNION ALL SELECT 'TEMP') p
WHERE has_database_privilege(%s, current_database(), p.privilege)
  AND NOT has_database_privilege(%s, current_database(), p.privilege)
ORDER BY 1, 2
"""
GROUPS = (
    "SELECT quote_ident(g.groname) FROM pg_group g, pg_user u "
    "WHERE u.usename = %s AND u.usesysid = ANY(g.grolist) ORDER BY 1"
)
# Redshift only (RBAC, 2022): vanilla PostgreSQL has neither the view nor GRANT ROLE.
ROLES = "SELECT quote_ident(role_name), admin_option FROM svv_user_grants WHERE user_name = %s ORDER BY 1"
# The user attributes that carry power, as both Redshift's and PostgreSQL's pg_user show them.
# Redshift's CREATEUSER is its superuser.
USER_FLAGS = "SELECT usesuper, usecreatedb FROM pg_user WHERE usename = %s"
# Redshift only: what makes a role administrative. System roles that manage users or any schema
# (sys:monitor and sys:operator only watch and vacuum), and roles holding a system privilege that
# manages users, roles or other users' default privileges, or that bypasses row-level security.
ADMIN_SYSTEM_ROLES = ("sys:superuser", "sys:secadmin", "sys:dba")
ADMIN_PRIVILEGE_ROLES = """
SELECT DISTINCT identity_name FROM svv_system_privileges
WHERE identity_type = 'role' AND system_privilege IN ('CREATE USER', 'ALTER USER', 'DROP USER',
  'CREATE ROLE', 'DROP ROLE', 'ALTER DEFAULT PRIVILEGES', 'IGNORE RLS')
"""
DIRECT_ROLES = "SELECT role_name FROM svv_user_grants WHERE user_name = %s"
ROLE_GRANTS = "SELECT role_name, granted_role_name FROM svv_role_grants"


def password_problems(password: str) -> list[str]:
    """What a password lacks to pass Redshift's rules; the password itself is never repeated."""
    problems = []
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        problems.append(f"{MIN_LENGTH} to {MAX_LENGTH} characters")
    for name, kind in (
        ("an upper case letter", string.ascii_uppercase),
        ("a lower case letter", string.ascii_lowercase),
        ("a digit", string.digits),
    ):
        if not any(char in kind for char in password):
            problems.append(name)
    if any(char in FORBIDDEN_CHARACTERS or not 33 <= ord(char) <= 126 for char in password):
        problems.append("only printable ASCII, without ' \" \\ / @ or space")
    return problems


def password_literal(password: str) -> str:
    """A password that passed the rules holds no quote or backslash, so quoting it is exact."""
    if problems := password_problems(password):
        raise SecretFormatError(
            f"The new password does not meet Redshift's rules (it needs {', '.join(problems)}): "
            "cancel this rotation and let createSecret generate the pending password"
        )
    return f"'{password}'"


def md5_password(password: str, stored_name: str) -> str:
    """Redshift's MD5 password string: 'md5' and the MD5 of the password followed by the user
    name as stored. Sent instead of the password, so no statement log holds the password."""
    return "md5" + hashlib.md5((password + stored_name).encode()).hexdigest()  # noqa: S324 - Redshift's scheme


def scram_verifier(password: str) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier (4096 iterations, random salt), made with scramp, the
    SCRAM library redshift-connector itself logs in with."""
    salt, stored_key, server_key, iterations = ScramMechanism("SCRAM-SHA-256").make_auth_info(password)
    salt_text, stored_text, server_text = (
        base64.b64encode(part).decode() for part in (salt, stored_key, server_key)
    )
    return f"SCRAM-SHA-256${iterations}:{salt_text}${stored_text}:{server_text}"
