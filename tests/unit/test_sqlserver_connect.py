"""How SQLServerRotator connects, against a fake SQL Server that speaks TDS and real TLS.

The fake (tests/tds_listener.py) runs the TLS handshake in PRELOGIN packets with a certificate of
the test CA, as SQL Server does, then decrypts the LOGIN7 packet: the tests prove the handshake
is verified (chain, then the SAN: never the CN, which python-tds's own pyOpenSSL check accepts)
before the driver sends the login, that the password never crosses the wire in any readable form,
that plaintext is tried only when the secret says so, and what each refusal becomes.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytds.tls
import pytest
from cryptography import x509

from rotators.database import DatabaseSecret, LoginRefusedError
from rotators.engines import sqlserver
from rotators.engines.sqlserver import SQLServerRotator
from rotators.errors import (
    REDACTED,
    DatabaseUnavailableError,
    LoginError,
    SecretFormatError,
    SecretTestError,
)
from rotators.testing.tls import CertificateAuthority
from tests.listeners import Listener
from tests.tds_listener import (
    CANNOT_OPEN_DATABASE,
    ENCRYPT_NOT_SUP,
    ENCRYPT_OFF,
    ENCRYPT_ON,
    ENCRYPT_REQ,
    LOGIN_FAILED,
    PASSWORD_EXPIRED,
    TEST_QUERY,
    TdsConnection,
    TdsServer,
    issue_cert,
    obfuscated,
    server_context,
    wire_forms,
)

PASSWORD = "Secret-pass-1"
ROOT = Path(__file__).resolve().parents[2]


def secret(**changes: Any) -> DatabaseSecret:
    value = {"engine": "sqlserver", "host": "127.0.0.1", "username": "app", "password": PASSWORD, **changes}
    return SQLServerRotator().parse(json.dumps(value), where="the test secret")


# -- certificates: the test CA's, for the right names, for other names, and a stranger's ---------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("sqlserver-tls")
    ca = CertificateAuthority.create(directory / "ca")
    stranger = CertificateAuthority.create(directory / "stranger")
    found: dict[str, Any] = {"ca": ca}
    for name, issuer, hosts in [
        ("local", ca, ("localhost", "127.0.0.1")),
        ("other", ca, ("other.example",)),
        ("stranger", stranger, ("localhost", "127.0.0.1")),
    ]:
        issuer.issue_server_cert(directory / f"{name}.crt", directory / f"{name}.key", hosts)
        found[name] = server_context(directory / f"{name}.crt", directory / f"{name}.key")
    issue_cert(
        ca, directory / "cn.crt", directory / "cn.key", common_name="localhost", sans=["other.example"]
    )
    found["cn"] = server_context(directory / "cn.crt", directory / "cn.key")
    found["cn_path"] = directory / "cn.crt"
    return found


@pytest.fixture
def serve(certs: dict[str, Any]) -> Iterator[Callable[..., TdsServer]]:
    """A fake SQL Server with the named certificate ("local" by default); closed after the test."""
    servers: list[TdsServer] = []

    def start(cert: str | None = "local", **options: Any) -> TdsServer:
        servers.append(TdsServer(certs[cert] if cert else None, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def log_in(server: TdsServer, certs: dict[str, Any], **changes: Any) -> TdsConnection:
    """Log in as app through the engine, run the test query, log out; what the server saw."""
    login = secret(port=server.port, sslrootcert=str(certs["ca"].cert_path), **changes)
    rotator = SQLServerRotator()
    with rotator.connect(login, "app", PASSWORD) as session:
        rotator.probe(session, "app")
    return server.last.wait()


def refused(server: TdsServer, certs: dict[str, Any], error: type[Exception], **changes: Any) -> str:
    """The engine's error for a login to `server` (it must be `error` exactly), once the server
    saw the connection end."""
    login = secret(port=server.port, sslrootcert=str(certs["ca"].cert_path), **changes)
    with pytest.raises(error) as caught, SQLServerRotator().connect(login, "app", PASSWORD):
        pass
    assert type(caught.value) is error
    message = str(caught.value)
    assert PASSWORD not in message
    server.last.wait()
    return message


def assert_no_password_on_the_wire(connection: TdsConnection) -> None:
    for form in wire_forms(PASSWORD):
        assert form not in connection.raw


# -- a verified login --------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_verify_full_logs_in_over_tls_12_and_sends_the_login_only_inside_it(
    host: str, serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    server = serve()
    login = secret(host=host, port=server.port, sslrootcert=str(certs["ca"].cert_path))
    rotator = SQLServerRotator()
    with rotator.connect(login, "app", PASSWORD) as session:
        assert rotator.tls_version(session) == "TLSv1.2", "TDS 7.x carries TLS 1.2 at most"
        rotator.probe(session, "app")
    seen = server.last.wait()
    assert seen.client_encryption == ENCRYPT_ON
    assert seen.tls_version == "TLSv1.2", "the server offered TLS 1.3 too"
    assert seen.events[:3] == ["prelogin", "handshake", "login7"]
    assert seen.login is not None and seen.login.encrypted
    assert (seen.login.user, seen.login.password, seen.login.database) == ("app", PASSWORD, "master")
    assert seen.login.server_name == host
    assert seen.batches == [TEST_QUERY], "the test query ran over TLS"
    assert_no_password_on_the_wire(seen)
    assert seen.events[-2:] == ["close_notify", "closed"], "the connection was closed after use"


def test_the_connection_is_closed_when_the_work_fails(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    server = serve(session_user="someone_else")
    login = secret(port=server.port, sslrootcert=str(certs["ca"].cert_path))
    rotator = SQLServerRotator()
    with pytest.raises(SecretTestError), rotator.connect(login, "app", PASSWORD) as session:
        rotator.probe(session, "app")
    assert server.last.wait().events[-2:] == ["close_notify", "closed"]


def test_the_probe_compares_names_as_sql_server_does(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    """The server reports the name as stored: `APP ` is `app`."""
    seen = log_in(serve(session_user="APP "), certs)
    assert seen.batches == [TEST_QUERY]


# -- refusals before the login packet ---------------------------------------------------------------------
def test_a_certificate_from_another_ca_is_refused_before_the_login(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    server = serve("stranger")
    message = refused(server, certs, DatabaseUnavailableError)
    assert "certificate verify failed" in message
    assert server.last.login is None and "handshake" not in server.last.events
    assert_no_password_on_the_wire(server.last)


def test_a_certificate_for_another_host_is_refused_unless_verify_ca(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    server = serve("other")
    message = refused(server, certs, DatabaseUnavailableError)
    assert "certificate verify failed" in message and "127.0.0.1" in message
    assert server.last.login is None

    seen = log_in(server, certs, sslmode="verify-ca")
    assert seen.login is not None and seen.login.encrypted
    assert_no_password_on_the_wire(seen)


def test_a_common_name_without_the_san_is_refused(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    """CN=localhost, SAN=DNS:other.example: a strict check refuses `localhost` (RFC 6125)."""
    server = serve("cn")
    message = refused(server, certs, DatabaseUnavailableError, host="localhost")
    assert "Hostname mismatch" in message
    assert server.last.login is None
    assert_no_password_on_the_wire(server.last)


def test_python_tds_own_check_would_have_accepted_that_common_name(certs: dict[str, Any]) -> None:
    """Why sqlserver_tls exists: python-tds's validate_host() matches the CN first. Shown on the
    same certificate, through the two pyOpenSSL calls it makes (pyOpenSSL is not installed)."""
    cert = x509.load_pem_x509_certificate(certs["cn_path"].read_bytes())
    common_name = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    class Extension:
        def get_short_name(self) -> bytes:
            return b"subjectAltName"

        def __str__(self) -> str:
            return ", ".join(f"DNS:{name}" for name in sans.get_values_for_type(x509.DNSName))

    class Subject:
        def get_components(self) -> list[tuple[bytes, bytes]]:
            return [(b"CN", str(common_name).encode())]

    class Certificate:
        def get_subject(self) -> Subject:
            return Subject()

        def get_extension_count(self) -> int:
            return 1

        def get_extension(self, index: int) -> Extension:
            return Extension()

    assert pytds.tls.validate_host(Certificate(), b"localhost")
    assert not pytds.tls.validate_host(Certificate(), b"elsewhere.example")


def test_require_encrypts_without_checking(serve: Callable[..., TdsServer], certs: dict[str, Any]) -> None:
    server = serve("stranger")
    seen = log_in(server, certs, sslmode="require", host="localhost")
    assert seen.login is not None and seen.login.encrypted
    assert seen.tls_version == "TLSv1.2"
    assert_no_password_on_the_wire(seen)


@pytest.mark.parametrize("encryption", [ENCRYPT_OFF, ENCRYPT_NOT_SUP])
def test_a_server_without_full_encryption_is_refused_before_the_login(
    encryption: int, serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    """ENCRYPT_OFF would encrypt the login packet only; NOT_SUP nothing: neither is tried."""
    server = serve(encryption=encryption)
    message = refused(server, certs, DatabaseUnavailableError)
    assert server.last.login is None and "handshake" not in server.last.events
    assert server.last.events[-1] == "closed", "the client hung up after the server's PRELOGIN"
    assert_no_password_on_the_wire(server.last)
    assert ('"ssl": false' in message) is (encryption == ENCRYPT_NOT_SUP), message


def test_encryption_required_by_the_server_is_full_encryption(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    seen = log_in(serve(encryption=ENCRYPT_REQ), certs)
    assert seen.login is not None and seen.login.encrypted and seen.batches == [TEST_QUERY]


# -- plaintext: only when the secret says so --------------------------------------------------------------
def test_plaintext_only_with_ssl_false_and_a_server_without_tls(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    seen = log_in(serve(None, encryption=ENCRYPT_NOT_SUP), certs, ssl=False)
    assert seen.client_encryption == ENCRYPT_NOT_SUP
    assert seen.login is not None and not seen.login.encrypted
    assert seen.batches == [TEST_QUERY]
    assert obfuscated(PASSWORD) in seen.raw, "in the clear, LOGIN7's obfuscation is all there is"


@pytest.mark.parametrize("encryption", [ENCRYPT_ON, ENCRYPT_REQ])
def test_ssl_false_against_a_server_that_encrypts_is_refused(
    encryption: int, serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    server = serve(encryption=encryption)
    refused(server, certs, DatabaseUnavailableError, ssl=False)
    assert server.last.login is None
    assert_no_password_on_the_wire(server.last)


# -- what each refusal becomes ----------------------------------------------------------------------------
def test_a_refused_password_is_a_refused_login(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    server = serve(errors=[LOGIN_FAILED])
    assert refused(server, certs, LoginRefusedError) == "SQL Server refused the login of 'app'"
    assert server.last.login is not None and server.last.login.encrypted


def test_an_expired_password_is_a_login_error_with_advice(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    server = serve(errors=[(PASSWORD_EXPIRED[0], PASSWORD_EXPIRED[1] + " Not {password}.")])
    message = refused(server, certs, LoginError)
    assert message.startswith("Did not log in as 'app' at 127.0.0.1:")
    assert "has expired" in message and "have an administrator set the AWSCURRENT value" in message
    assert f"Not {REDACTED}. The password has expired" in message, "the server's words, the password hidden"


@pytest.mark.parametrize(
    "errors",
    [[CANNOT_OPEN_DATABASE, LOGIN_FAILED], [CANNOT_OPEN_DATABASE]],
    ids=["as SQL Server sends it", "4060 alone"],
)
def test_a_database_that_cannot_be_opened_is_unavailable_with_the_dbname_hint(
    errors: list[tuple[int, str]], serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    """SQL Server follows 4060 with 18456, the one python-tds raises: the password was right,
    so no other version is tried. And the driver's retry loop does not sleep out the timeout."""
    server = serve(errors=errors)
    started = time.monotonic()
    message = refused(server, certs, DatabaseUnavailableError, dbname="orders")
    assert time.monotonic() - started < 2
    assert 'Cannot open database "orders" requested by the login' in message
    assert message.endswith("; check 'dbname' in the secret")
    assert server.last.login is not None and server.last.login.database == "orders"


def test_no_password_in_a_server_message(serve: Callable[..., TdsServer], certs: dict[str, Any]) -> None:
    server = serve(errors=[(4060, "Cannot open database for {user} with {password}."), LOGIN_FAILED])
    message = refused(server, certs, DatabaseUnavailableError)
    assert f"Cannot open database for app with {REDACTED}. Login failed for user 'app'." in message


# -- the transport -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def test_a_refused_port_fails_at_once() -> None:
    started = time.monotonic()
    with (
        pytest.raises(DatabaseUnavailableError) as caught,
        SQLServerRotator().connect(secret(port=free_port()), "app", PASSWORD),
    ):
        pass
    assert time.monotonic() - started < 1, "well under the 5 s connect timeout"
    assert "Connection refused" in str(caught.value)


class Resetting(Listener):
    """Reads the PRELOGIN, then resets the connection (a server going down)."""

    def serve(self, client: socket.socket) -> None:
        client.recv(4096)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()


class Silent(Listener):
    """Accepts and says nothing."""

    def serve(self, client: socket.socket) -> None:
        client.recv(4096)
        time.sleep(5)
        client.close()


def test_a_reset_connection_fails_at_once() -> None:
    """python-tds's retry loop would sleep out the whole login timeout for a ConnectionError."""
    with Resetting() as server:
        started = time.monotonic()
        with (
            pytest.raises(DatabaseUnavailableError) as caught,
            SQLServerRotator().connect(secret(port=server.port), "app", PASSWORD),
        ):
            pass
    assert time.monotonic() - started < 1
    assert "Connection reset by peer" in str(caught.value)


def test_a_silent_server_times_out_after_the_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "0.5")
    with Silent() as server:
        started = time.monotonic()
        with (
            pytest.raises(DatabaseUnavailableError) as caught,
            SQLServerRotator().connect(secret(port=server.port), "app", PASSWORD),
        ):
            pass
        assert 0.4 < time.monotonic() - started < 2
    assert "timed out" in str(caught.value)


def test_an_instance_name_is_refused_before_any_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(sqlserver, "open_socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    instance = secret(host="db.example\\SQLEXPRESS")
    with (
        pytest.raises(SecretFormatError, match="names a SQL Server instance") as caught,
        SQLServerRotator().connect(instance, "app", PASSWORD),
    ):
        pass
    assert PASSWORD not in str(caught.value)


# -- the TLS module needs neither pyOpenSSL nor cryptography ----------------------------------------------
def test_importing_the_engine_loads_neither_openssl_nor_cryptography() -> None:
    code = (
        "import sys\nimport rotators.engines.sqlserver\n"
        "print(sorted({'OpenSSL', 'cryptography'} & set(sys.modules)))"
    )
    found = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    assert found.stdout.strip() == "[]"


def test_a_verified_login_works_with_openssl_and_cryptography_unimportable(
    serve: Callable[..., TdsServer], certs: dict[str, Any]
) -> None:
    """As in a Lambda bundle without them: a whole verify-full login and probe."""
    server = serve()
    value = {"port": server.port, "sslrootcert": str(certs["ca"].cert_path)}
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["OpenSSL"] = sys.modules["cryptography"] = None  # import fails
        from rotators.engines.sqlserver import SQLServerRotator
        rotator = SQLServerRotator()
        value = {{"engine": "sqlserver", "host": "127.0.0.1", "username": "app", "password": "{PASSWORD}"}}
        login = rotator.parse(json.dumps({{**value, **{value!r}}}), where="the test secret")
        with rotator.connect(login, "app", "{PASSWORD}") as session:
            rotator.probe(session, "app")
            print(rotator.tls_version(session))
    """)
    found = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT
    )
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip() == "TLSv1.2"
    seen = server.last.wait()
    assert seen.login is not None and seen.login.encrypted and seen.batches == [TEST_QUERY]
