"""The TLS policy every engine shares (rotators.database): the mode, the CA bundle, the SSLContext
for drivers that take one, and the transport line of `rotators check`; then, for every engine, that
its driver options carry the policy: plaintext only when the secret says so, a weak
ROTATORS_SSLMODE refused, a CA bundle that cannot be read refused. How each driver spells a mode is
in the engine's own unit file."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytds
import pytest

from rotators.database import CaBundle, DatabaseRotator, DatabaseSecret, ca_bundle, ssl_context, tls_mode
from rotators.engines import redshift, sqlserver
from rotators.engines.documentdb import DocumentDBRotator
from rotators.engines.mysql import MySQLRotator
from rotators.engines.oracle import OracleRotator
from rotators.engines.postgresql import PostgreSQLRotator
from rotators.engines.redshift import RedshiftRotator
from rotators.engines.sqlserver import SQLServerRotator
from rotators.errors import ConfigurationError
from rotators.testing.tls import CertificateAuthority
from tests.offline import ca_names


def secret(rotator: DatabaseRotator[Any], engine: str, **changes: Any) -> DatabaseSecret:
    value = {"engine": engine, "host": "db.example", "username": "app", "password": "Old-Pass-1", **changes}
    return rotator.parse(json.dumps(value), where="the test secret")


class Captured(Exception):
    """Raised by the stand-in for redshift-connector once it has what the engine passed."""


def redshift_tls(value: DatabaseSecret, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """redshift-connector takes no options object: what the engine hands its connection."""
    seen: dict[str, Any] = {}

    def connect(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise Captured

    monkeypatch.setattr(redshift, "GuardedConnection", connect)
    with pytest.raises(Captured), RedshiftRotator().connect(value, "app", "Old-Pass-1"):
        pass
    return {"ssl": seen["ssl"]}


def oracle_tls(value: DatabaseSecret, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    options = OracleRotator().connect_options(value)
    return {k: options[k] for k in ("protocol", "ssl_context", "ssl_server_dn_match") if k in options}


def sqlserver_tls(value: DatabaseSecret, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What python-tds is handed: `cafile` (set, it asks for encryption) and the SSLContext its
    TLS module then gets (rotators.engines.sqlserver_tls in pyOpenSSL's place)."""
    seen: dict[str, Any] = {}

    def connect(**kwargs: Any) -> None:
        cafile = kwargs["cafile"]
        seen.update(cafile=cafile, ssl_context=pytds.tls.create_context(cafile) if cafile else None)
        raise Captured

    monkeypatch.setattr(sqlserver, "open_socket", lambda *_: socket.socket())
    monkeypatch.setattr(pytds, "connect", connect)
    with pytest.raises(Captured), SQLServerRotator().connect(value, "app", "Old-Pass-1"):
        pass
    return seen


# engine -> (a rotator, a secret engine value, the TLS options of a login, those of plaintext)
Options = Callable[[DatabaseSecret, pytest.MonkeyPatch], dict[str, Any]]
ENGINES: dict[str, tuple[DatabaseRotator[Any], str, Options, dict[str, Any]]] = {
    "postgresql": (
        PostgreSQLRotator(), "postgres", lambda s, _: PostgreSQLRotator.tls_options(s), {"sslmode": "disable"}
    ),
    "mysql": (MySQLRotator(), "mysql", lambda s, _: MySQLRotator.tls_options(s), {"ssl_disabled": True}),
    "oracle": (OracleRotator(), "oracle", oracle_tls, {"protocol": "tcp"}),
    "documentdb": (
        DocumentDBRotator(), "mongo", lambda s, _: DocumentDBRotator.tls_options(s), {"tls": False}
    ),
    "redshift": (RedshiftRotator(), "redshift", redshift_tls, {"ssl": False}),
    "sqlserver": (SQLServerRotator(), "sqlserver", sqlserver_tls, {"cafile": None, "ssl_context": None}),
}  # fmt: skip
# The engines whose driver takes the base's SSLContext, and where it finds it.
CONTEXTS: dict[str, Callable[[DatabaseSecret], Any]] = {
    "mysql": lambda s: MySQLRotator.tls_options(s).get("ssl"),
    "oracle": lambda s: OracleRotator().connect_options(s).get("ssl_context"),
    "sqlserver": lambda s: SQLServerRotator().tls_context(s),
}


# -- the policy -------------------------------------------------------------------------------------
def test_the_mode_is_the_secrets_then_the_environments_then_verify_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rotator = PostgreSQLRotator()
    assert tls_mode(secret(rotator, "postgres")) == "verify-full"
    monkeypatch.setenv("ROTATORS_SSLMODE", "require")
    assert tls_mode(secret(rotator, "postgres")) == "require"
    assert tls_mode(secret(rotator, "postgres", sslmode="verify-ca")) == "verify-ca", "the secret wins"
    assert tls_mode(secret(rotator, "postgres", ssl=False)) is None


def test_the_ca_bundle_tells_unset_from_the_system_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both mean the system store, but only "system" is a choice (DocumentDB needs one made)."""
    rotator = PostgreSQLRotator()
    assert ca_bundle(secret(rotator, "postgres")) == CaBundle(None, named=False)
    assert ca_bundle(secret(rotator, "postgres", sslrootcert="system")) == CaBundle(None, named=True)
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "/env/ca.pem")
    assert ca_bundle(secret(rotator, "postgres")) == CaBundle("/env/ca.pem", named=True)
    own = secret(rotator, "postgres", sslrootcert="/own/ca.pem")
    assert ca_bundle(own).path == "/own/ca.pem", "the secret wins"
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", "system")
    assert ca_bundle(secret(rotator, "postgres")) == CaBundle(None, named=True)


@pytest.mark.parametrize("engine", sorted(CONTEXTS))
@pytest.mark.parametrize(
    ("env", "changes", "verify_mode", "check_hostname"),
    [
        (None, {}, ssl.CERT_REQUIRED, True),
        (None, {"sslmode": "verify-full"}, ssl.CERT_REQUIRED, True),
        (None, {"sslmode": "verify-ca"}, ssl.CERT_REQUIRED, False),
        (None, {"sslmode": "require"}, ssl.CERT_NONE, False),
        ("require", {}, ssl.CERT_NONE, False),
        ("require", {"sslmode": "verify-full"}, ssl.CERT_REQUIRED, True),
    ],
)
def test_the_ssl_context_of_each_mode(
    engine: str,
    env: str | None,
    changes: dict[str, Any],
    verify_mode: ssl.VerifyMode,
    check_hostname: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env:
        monkeypatch.setenv("ROTATORS_SSLMODE", env)
    rotator, value = ENGINES[engine][0], ENGINES[engine][1]
    context = CONTEXTS[engine](secret(rotator, value, **changes))
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (verify_mode, check_hostname)
    assert ssl_context(secret(rotator, value, ssl=False)) is None


@pytest.mark.parametrize("engine", sorted(CONTEXTS))
def test_the_ssl_context_trusts_the_ca_bundle(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = CertificateAuthority.create(tmp_path)
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(ca.cert_path))
    rotator, value = ENGINES[engine][0], ENGINES[engine][1]
    context = CONTEXTS[engine](secret(rotator, value))
    subjects = [dict(entry[0] for entry in cert["subject"]) for cert in context.get_ca_certs()]
    assert {"commonName": ca.name} in subjects


@pytest.mark.parametrize("engine", sorted(CONTEXTS))
@pytest.mark.parametrize("mode", ["verify-full", "require"])
def test_a_ca_bundle_that_cannot_be_read_is_an_error_not_a_fallback(
    engine: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even where nothing is verified (require, here from the environment): a named file is read."""
    monkeypatch.setenv("ROTATORS_SSLMODE", mode)
    rotator, value = ENGINES[engine][0], ENGINES[engine][1]
    with pytest.raises(ConfigurationError, match=r"missing\.pem' cannot be read"):
        CONTEXTS[engine](secret(rotator, value, sslrootcert=str(tmp_path / "missing.pem")))


def test_mysql_logins_share_one_context_per_bundle_and_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a CA bundle costs CPU that a Lambda invocation gets a seventh of: one per process."""
    bundle = CertificateAuthority.create(tmp_path).cert_path
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(bundle))
    rotator = MySQLRotator()
    first, again = (
        CONTEXTS["mysql"](secret(rotator, "mysql", username=user)) for user in ("app", "app_clone")
    )
    assert first is again
    unverified = CONTEXTS["mysql"](secret(rotator, "mysql", sslmode="require"))
    assert unverified is not first
    assert (unverified.verify_mode, first.verify_mode, first.check_hostname) == (
        ssl.CERT_NONE,
        ssl.CERT_REQUIRED,
        True,
    )
    assert CONTEXTS["oracle"](secret(OracleRotator(), "oracle")) is not CONTEXTS["oracle"](
        secret(OracleRotator(), "oracle")
    ), "oracledb adds a wallet's certificates to the context it is given: never shared"


def test_a_shared_context_follows_its_bundle_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle replaced in place is read again; one removed is an error, not the context of before."""
    old, new = CertificateAuthority.create(tmp_path / "old"), CertificateAuthority.create(tmp_path / "new")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(old.cert_path.read_bytes())
    monkeypatch.setenv("ROTATORS_CA_BUNDLE", str(bundle))
    rotator = MySQLRotator()
    assert ca_names(CONTEXTS["mysql"](secret(rotator, "mysql"))) == [old.name]
    bundle.write_bytes(new.cert_path.read_bytes() + b"\n")  # another size, whatever the clock says
    assert ca_names(CONTEXTS["mysql"](secret(rotator, "mysql"))) == [new.name]
    bundle.unlink()
    with pytest.raises(ConfigurationError, match=r"bundle\.pem' cannot be read"):
        CONTEXTS["mysql"](secret(rotator, "mysql"))


# -- every engine carries it --------------------------------------------------------------------------
@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("changes", [{"ssl": False}, {"ssl": "false"}, {"sslmode": "disable"}])
def test_plaintext_only_when_the_secret_says_so(
    engine: str, changes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATORS_SSLMODE", "verify-full")
    rotator, value, options, plaintext = ENGINES[engine]
    assert options(secret(rotator, value, **changes), monkeypatch) == plaintext
    assert options(secret(rotator, value), monkeypatch) != plaintext, "TLS by default"


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("mode", ["prefer", "allow", "disable", "preferred"])
def test_a_weak_sslmode_in_the_environment_is_refused(
    engine: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """allow and prefer fall back to plaintext without a word: only the secret turns TLS off."""
    monkeypatch.setenv("ROTATORS_SSLMODE", mode)
    rotator, value, options, _ = ENGINES[engine]
    with pytest.raises(ConfigurationError, match='"ssl": false'):
        options(secret(rotator, value), monkeypatch)


# -- `rotators check`: the transport line, written by the base -------------------------------------------
@pytest.mark.parametrize(
    ("changes", "version", "server", "line"),
    [
        ({"ssl": False}, "TLSv1.3", "MariaDB 10.11.6", "plaintext, as the secret asks"),
        ({}, None, None, "TLS (sslmode=verify-full, certificate verified)"),
        ({"sslmode": "verify-ca"}, "TLSv1.3", None, "TLS (TLSv1.3, sslmode=verify-ca, certificate verified)"),
        ({"sslmode": "require"}, None, "MongoDB", "TLS (sslmode=require, certificate NOT verified, MongoDB)"),
        ({}, "TLSv1.2", "MariaDB 10.11.6",
         "TLS (TLSv1.2, sslmode=verify-full, certificate verified, MariaDB 10.11.6)"),
    ],
)  # fmt: skip
def test_the_transport_in_words(
    changes: dict[str, Any],
    version: str | None,
    server: str | None,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An engine says only what its session negotiated and what the server is, where it knows."""
    rotator = PostgreSQLRotator()
    monkeypatch.setattr(rotator, "tls_version", lambda conn: version)
    monkeypatch.setattr(rotator, "server_name", lambda conn: server)
    assert rotator.transport(object(), secret(rotator, "postgres", **changes)) == line  # type: ignore[arg-type]
