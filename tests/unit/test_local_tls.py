"""The local CA's certificates pass a strict X.509 verifier (Python 3.13's default,
VERIFY_X509_STRICT), on any Python: a real TLS handshake in memory, hostname checked."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from rotators.testing.tls import CertificateAuthority


def handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> None:
    """Both ends of one TLS handshake through memory buffers."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(to_client, to_server, server_hostname=hostname)
    tls_server = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", tls_client), ("server", tls_server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


@pytest.fixture(scope="module")
def ca_and_server(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, ssl.SSLContext]:
    root: Path = tmp_path_factory.mktemp("ca")
    ca = CertificateAuthority.create(root / "ca")
    ca.issue_server_cert(root / "server.crt", root / "server.key")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(root / "server.crt", root / "server.key")
    return ca, server


def strict_client(ca: CertificateAuthority) -> ssl.SSLContext:
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    return client


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_a_strict_verifier_accepts_the_server_certificate(
    ca_and_server: tuple[CertificateAuthority, ssl.SSLContext], hostname: str
) -> None:
    ca, server = ca_and_server
    handshake(strict_client(ca), server, hostname)


def test_the_strict_verifier_still_checks_the_name(
    ca_and_server: tuple[CertificateAuthority, ssl.SSLContext],
) -> None:
    ca, server = ca_and_server
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(strict_client(ca), server, "db.example.com")


def test_the_strict_verifier_refuses_another_ca(
    ca_and_server: tuple[CertificateAuthority, ssl.SSLContext], tmp_path: Path
) -> None:
    _, server = ca_and_server
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(strict_client(CertificateAuthority.create(tmp_path / "other")), server, "localhost")
