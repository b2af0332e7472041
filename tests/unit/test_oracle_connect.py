"""How OracleRotator connects: TCPS options, and what each login failure becomes.

No Oracle listener runs here. The TLS tests use a real python-oracledb client against a local
TLS socket with a certificate from the test CA: they prove the handshake is verified (chain and
host name) before the driver sends its first TNS packet, and that plaintext is never tried.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotators.cli.check import run_checks
from rotators.database import STRICT_X509_HINT, DatabaseSecret, LoginRefusedError
from rotators.engines.oracle import OracleRotator
from rotators.errors import DatabaseUnavailableError, LoginError, SecretFormatError
from rotators.testing.tls import CertificateAuthority
from tests.listeners import Listener
from tests.offline import FakeSecretsManager, store
from tests.oracle_double import OracleDouble, ora_error

PASSWORD = "Secret-pass-1"


def secret(**changes: Any) -> DatabaseSecret:
    value = {"engine": "oracle", "host": "db.example", "username": "app", "password": PASSWORD, **changes}
    return OracleRotator().parse(json.dumps(value), where="the test secret")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("oracle-ca"))


# -- the options (the policy they carry, and plain TCP: tests/unit/test_tls_policy.py) ----------------------
def test_tcps_with_full_verification_is_the_default() -> None:
    options = OracleRotator().connect_options(secret(port=2484, dbname="ORCLPDB1"))
    context = options.pop("ssl_context")
    assert options == {
        "host": "db.example",
        "port": 2484,
        "service_name": "ORCLPDB1",
        "tcp_connect_timeout": 5.0,
        "retry_count": 0,
        "program": "rotators",
        "protocol": "tcps",
        "ssl_server_dn_match": True,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_verify_ca_skips_only_the_host_name() -> None:
    options = OracleRotator().connect_options(secret(sslmode="verify-ca"))
    assert options["ssl_server_dn_match"] is False
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_require_encrypts_without_verifying() -> None:
    options = OracleRotator().connect_options(secret(sslmode="require"))
    assert (options["protocol"], options["ssl_server_dn_match"]) == ("tcps", False)
    assert options["ssl_context"].verify_mode == ssl.CERT_NONE


# -- logins, through the recording double ------------------------------------------------------------------
def test_a_login_passes_the_name_as_spelled_and_closes_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = OracleDouble(version="21.3.0.0.0").install(monkeypatch)
    with OracleRotator().connect(secret(), '"App"', PASSWORD) as session:
        assert (session.login.stored, session.features.version) == ("App", (21, 3))
    assert double.connects[0]["user"] == '"App"'
    assert double.connects[0]["password"] == PASSWORD
    assert double.closed_connections == 1


@pytest.mark.parametrize(
    ("code", "error", "match"),
    [
        (1017, LoginRefusedError, "refused the login of 'app'"),
        (28000, LoginError, "locked"),
        (28001, LoginError, "expired"),
    ],
)
def test_login_failures(
    code: int, error: type[Exception], match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    OracleDouble(connect_error=ora_error(code, f"no entry for {PASSWORD}")).install(monkeypatch)
    with pytest.raises(error, match=match) as caught, OracleRotator().connect(secret(), "app", PASSWORD):
        pass
    assert PASSWORD not in str(caught.value)
    assert type(caught.value) is error, "locked or expired accounts are not retried with other versions"


def test_an_unreachable_listener_is_unavailable_with_the_tcps_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    OracleDouble(connect_error=ora_error(12514, f"listener does not know service {PASSWORD}")).install(
        monkeypatch
    )
    with (
        pytest.raises(DatabaseUnavailableError) as caught,
        OracleRotator().connect(secret(), "app", PASSWORD),
    ):
        pass
    message = str(caught.value)
    assert message.startswith("Cannot connect to Oracle at db.example:1521/ORCL: ORA-12514")
    assert '"ssl": false' in message and "2484" in message
    assert PASSWORD not in message and "Help:" not in message


def test_the_tcps_hint_survives_a_connection_id_that_spells_dn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's random CONNECTION_ID once held "DN", which read as a certificate problem."""
    text = "DPY-6005: cannot connect to database (CONNECTION_ID=QXY1UagHHsV0RraDNBhgpA==). EOF occurred"
    OracleDouble(connect_error=ora_error(12547, text)).install(monkeypatch)
    with (
        pytest.raises(DatabaseUnavailableError) as caught,
        OracleRotator().connect(secret(), "app", PASSWORD),
    ):
        pass
    assert '"ssl": false' in str(caught.value)


def test_an_illegal_login_name_is_refused_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    double = OracleDouble().install(monkeypatch)
    with pytest.raises(SecretFormatError), OracleRotator().connect(secret(), "app-user", PASSWORD):
        pass
    assert double.connects == []


# -- a real TLS handshake, against a socket that speaks TLS and then reads the first TNS packet -------------
class TlsEndpoint(Listener):
    """TLS (or plain TCP), then records the first bytes and hangs up."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self.context = context
        self.first_bytes: list[bytes] = []
        self.handshake_errors: list[str] = []
        super().__init__()

    def serve(self, client: socket.socket) -> None:
        client.settimeout(5)
        try:
            conn = self.context.wrap_socket(client, server_side=True) if self.context else client
            self.first_bytes.append(conn.recv(4096))
            conn.close()
        except (ssl.SSLError, OSError) as exc:
            self.handshake_errors.append(type(exc).__name__)
            client.close()


def server_context(
    ca: CertificateAuthority, tmp_path: Path, name: str = "localhost", *, key_identifiers: bool = True
) -> ssl.SSLContext:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    ca.issue_server_cert(cert, key, (name,), key_identifiers=key_identifiers)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
def listen() -> Iterator[Any]:
    listeners: list[TlsEndpoint] = []

    def start(context: ssl.SSLContext | None) -> TlsEndpoint:
        listeners.append(TlsEndpoint(context))
        return listeners[-1]

    yield start
    for listener in listeners:
        listener.close()


def try_login(port: int, **changes: Any) -> str:
    """The driver matches DNS names (not IP addresses) of the certificate: log in to `localhost`."""
    local = secret(host="localhost", port=port, **changes)
    with pytest.raises(DatabaseUnavailableError) as caught, OracleRotator().connect(local, "app", PASSWORD):
        pass
    return str(caught.value)


TNS_CONNECT = 1  # the packet type byte of the first packet a client sends


def test_a_verified_handshake_comes_before_the_first_tns_packet(
    ca: CertificateAuthority, tmp_path: Path, listen: Any
) -> None:
    listener = listen(server_context(ca, tmp_path))
    message = try_login(listener.port, sslrootcert=str(ca.cert_path))  # the fake then hangs up
    assert listener.first_bytes, "the TLS handshake succeeded and the driver spoke"
    assert listener.first_bytes[0][4] == TNS_CONNECT
    assert PASSWORD.encode() not in b"".join(listener.first_bytes)
    assert "certificate" not in message


def test_a_certificate_from_another_ca_is_refused(
    ca: CertificateAuthority, tmp_path: Path, listen: Any
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "stranger")
    listener = listen(server_context(ca, tmp_path))
    message = try_login(listener.port, sslrootcert=str(stranger.cert_path))
    assert "certificate verify failed" in message
    assert not any(listener.first_bytes), "nothing was sent to an unverified server"
    assert "2484" not in message, "no misleading plain-TCP hint for a certificate problem"


def test_a_certificate_for_another_host_is_refused_unless_verify_ca(
    ca: CertificateAuthority, tmp_path: Path, listen: Any
) -> None:
    listener = listen(server_context(ca, tmp_path, name="other.example"))
    message = try_login(listener.port, sslrootcert=str(ca.cert_path))
    assert "DPY-6006" in message, "the name on the certificate does not match"
    assert not any(listener.first_bytes)

    try_login(listener.port, sslrootcert=str(ca.cert_path), sslmode="verify-ca")
    assert [chunk[4] for chunk in listener.first_bytes if chunk] == [TNS_CONNECT]


def test_tcps_against_a_plain_listener_fails_with_the_hint_and_never_falls_back(listen: Any) -> None:
    listener = listen(None)
    message = try_login(listener.port)
    assert '"ssl": false' in message
    assert all(chunk[:1] == b"\x16" for chunk in listener.first_bytes if chunk), "only TLS records were sent"


@pytest.fixture
def strict_x509(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.13's default (VERIFY_X509_STRICT) on the Python running the tests."""
    default = ssl.create_default_context

    def strict(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = default(*args, **kwargs)
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        return context

    monkeypatch.setattr(ssl, "create_default_context", strict)


def test_a_chain_without_key_identifiers_fails_with_what_to_do(
    ca: CertificateAuthority, tmp_path: Path, listen: Any, strict_x509: None
) -> None:
    listener = listen(server_context(ca, tmp_path, key_identifiers=False))
    message = try_login(listener.port, sslrootcert=str(ca.cert_path))
    assert "Missing Authority Key Identifier" in message
    assert STRICT_X509_HINT in message and "2484" not in message
    assert not any(listener.first_bytes), "nothing was sent to an unverified server"


def test_rotators_check_reports_a_chain_without_key_identifiers(
    ca: CertificateAuthority, tmp_path: Path, listen: Any, strict_x509: None
) -> None:
    listener = listen(server_context(ca, tmp_path, key_identifiers=False))
    value = {"engine": "oracle", "host": "localhost", "port": listener.port, "username": "app"}
    client = FakeSecretsManager(
        {("app", "AWSCURRENT"): {**value, "password": PASSWORD, "sslrootcert": str(ca.cert_path)}}
    )
    failed = [check for check in run_checks("app", store=store(client)) if check.passed is False]
    assert [check.name for check in failed] == ["user logs in"]
    assert STRICT_X509_HINT in failed[0].detail and PASSWORD not in failed[0].detail
