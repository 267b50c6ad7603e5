"""TLS: the real CLI, given a certificate made at test time, serves https:// and wss:// on one port."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from openai import OpenAI

from tests.conftest import cli_server, error_line, run_cli, strict_server_event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_https_and_wss_from_the_same_port(certificate, tmp_path):
    cert_path, key_path = certificate
    trust = ssl.create_default_context(cafile=str(cert_path))
    args = ["--tls-cert", str(cert_path), "--tls-key", str(key_path)]
    with cli_server(args, tmp_path / "server.log") as url:
        assert url.startswith("https://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/healthz", context=trust, timeout=30) as reply:
            assert json.load(reply)["status"] == "ok"
        with urllib.request.urlopen(f"{url}/", context=trust, timeout=30) as reply:
            assert b"<html" in reply.read().lower()

        host = url.removeprefix("https://")
        client = OpenAI(base_url=f"{url}/v1", websocket_base_url=f"wss://{host}/v1", api_key="unused")
        # The same 30 s as the requests above, not the library's 10 s: twice, with both cores of a CI box
        # busy, this first upgrade had no answer within 10 s (cause not found; 180 tries alone never did).
        with client.realtime.connect(
            model="gemma-4", websocket_connection_options={"ssl": trust, "open_timeout": 30}
        ) as connection:
            created = connection.recv()
            assert created.type == "session.created"
            strict_server_event(created.model_dump(mode="json"))
            connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}
            )
            connection.response.create(response={"max_output_tokens": 4})
            done = next(event for event in connection if event.type == "response.done")
            assert done.response.status in ("completed", "incomplete")
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_a_plain_client_cannot_talk_to_the_tls_port(certificate, tmp_path):
    cert_path, key_path = certificate
    with cli_server(
        ["--tls-cert", str(cert_path), "--tls-key", str(key_path)], tmp_path / "server.log"
    ) as url:
        with pytest.raises(OSError):
            urllib.request.urlopen(url.replace("https://", "http://") + "/healthz", timeout=30)


def test_tls_flags_go_together_and_bad_files_fail_in_one_line(certificate, tmp_path):
    cert_path, key_path = certificate
    alone = run_cli("serve", "--port", "0", "--tls-cert", str(cert_path))
    assert alone.returncode == 2
    assert "--tls-cert and --tls-key go together" in error_line(alone)

    missing = run_cli(
        "serve", "--port", "0", "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key_path)
    )
    assert missing.returncode == 1
    assert "No such file or directory" in error_line(missing)

    swapped = run_cli("serve", "--port", "0", "--tls-cert", str(key_path), "--tls-key", str(cert_path))
    assert swapped.returncode == 1
    assert error_line(swapped).startswith(f"mlx-realtime: error: cannot use --tls-cert {key_path}")
