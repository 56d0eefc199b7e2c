"""``clustercore login`` over real TLS: a self-signed certificate is pinned only when its
fingerprint is the one given, the token is checked before anything is stored, and the
pinned certificate is then trusted for that server whatever name it is reached by.

The real app on the real ApiServer (uvicorn) on a loopback port, with a certificate made
here that names only ``localhost``."""

from __future__ import annotations

import datetime
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clustercore import Cluster, Plugins, auth
from clustercore.api import create_app
from clustercore.api.server import ApiServer
from clustercore.cli import main
from clustercore.client import ApiError, Client, fingerprint, server_certificate
from clustercore.testing import FakeFlavor


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path, str]:
    """A self-signed certificate for ``name`` (and nothing else): its file, key and fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_text(pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, fingerprint(pem)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """The API (the real app over a small cluster) on 127.0.0.1 with a certificate that
    names only ``localhost`` (``--cert``/``--key``): its URL, fingerprint and an admin token."""
    cert, key, fp = self_signed(tmp_path_factory.mktemp("tls"))
    cluster = Cluster(plugins=Plugins([FakeFlavor("fake")], entry_points=False))
    token = auth.create_token(cluster.store, "alice", "admin")
    with ApiServer(create_app(cluster), "127.0.0.1:0", cert, key) as api:
        yield api.url, fp, token


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "conf" / "config.json"
    monkeypatch.setenv("CLUSTERCORE_CONFIG", str(path))
    for name in ("CLUSTERCORE_API", "CLUSTERCORE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_login_pins_the_certificate_with_the_right_fingerprint(server: tuple[str, str, str], config: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    url, fp, token = server
    assert main(["login", "--api", url, "--token", token, "--fingerprint", fp.lower().replace(":", "")]) == 0
    assert "logged in to" in capsys.readouterr().out
    stored = json.loads(config.read_text())
    pem = Path(stored.pop("ca"))
    assert stored == {"api": url, "token": token, "pinned": True}
    assert fingerprint(pem.read_text()) == fp
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert main(["whoami", "-o", "json"]) == 0  # 127.0.0.1 is not in the certificate: the pin is what counts
    assert json.loads(capsys.readouterr().out)["name"] == "alice"


def test_login_refuses_a_wrong_fingerprint(server: tuple[str, str, str], config: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    url, fp, token = server
    wrong = ("00:" * 32)[:-1]
    assert main(["login", "--api", url, "--token", token, "--fingerprint", wrong]) == 4
    err = capsys.readouterr().err
    assert err.startswith("clustercore: error: ") and fp in err and "refused" in err and err.count("\n") == 1
    assert not config.exists() and not list(config.parent.glob("server.pem*"))


def test_login_without_a_fingerprint_refuses_a_self_signed_certificate(server: tuple[str, str, str], config: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    url, fp, token = server
    assert main(["login", "--api", url, "--token", token]) == 4
    err = capsys.readouterr().err
    assert f"--fingerprint {fp}" in err and not config.exists()


def test_login_with_a_bad_token_stores_nothing(server: tuple[str, str, str], config: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    url, fp, _ = server
    assert main(["login", "--api", url, "--token", "cc_0123456789abcdef_wrong", "--fingerprint", fp]) == 4
    err = capsys.readouterr().err
    assert err.startswith("clustercore: error: ") and err.count("\n") == 1
    assert not config.exists() and not list(config.parent.glob("server.pem*"))


def test_without_the_pin_the_certificate_is_not_trusted(server: tuple[str, str, str], config: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    url, _, token = server
    assert main(["whoami", "--api", url, "--token", token]) == 1
    assert "not trusted" in capsys.readouterr().err


def test_a_ca_file_checks_the_name(server: tuple[str, str, str], tmp_path: Path) -> None:
    url, _, token = server
    pem = tmp_path / "server.pem"
    pem.write_text(server_certificate(url))
    with Client(url, token, pem) as strict, pytest.raises(ApiError, match="not trusted"):
        strict.whoami()  # the certificate names localhost, not 127.0.0.1
    with Client(url.replace("127.0.0.1", "localhost"), token, pem) as named:
        assert named.whoami()["name"] == "alice"
    with Client(url, token, pem, check_hostname=False) as pinned:
        assert pinned.whoami()["role"] == "admin"
