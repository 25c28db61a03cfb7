"""Redis AUTH with an ACL user, TLS for the state store and the broker, and secrets that never
appear in any output. Real servers throughout: redis-server with TLS, certificates made here."""

from __future__ import annotations

import datetime
import ipaddress
import traceback
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from archiver.cli import main
from archiver.dev.local_redis import LocalRedis, free_port
from tests.support import S3Endpoint, System, wait_for

REDIS_PASSWORD = "redis-Pa55-7f3c9e"
AWS_KEY_ID = "AKIAEXAMPLE7F3C9E"
AWS_SECRET = "aws-secret-0d1e2f3a4b5c"


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "archiver test CA")])
    ca_cert = build("archiver test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = build("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def _archive_three_entries(system: System) -> None:
    system.start()
    for lsn in (1, 2, 3):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    for lsn in (1, 2, 3):
        system.assert_archive_matches_source(1, lsn)
    system.assert_invariants()


def test_tls_for_the_state_store_and_the_broker(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    port = free_port()
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    server = LocalRedis(
        tmp_path / "redis",
        extra_args=[
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
        ],
        url=url,
    ).start()
    try:
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_timeout=2).ping()  # plain TCP is not served
        system = System(redis_url=url, tmp=tmp_path, sink_url=(tmp_path / "bucket").as_uri())
        try:
            # The broker defaults to the same URL: tasks travel over TLS too.
            assert "ARCHIVER_BROKER_URL" not in system.env()
            _archive_three_entries(system)
        finally:
            system.close()
    finally:
        server.stop()


def test_an_acl_user_works_and_no_secret_shows_in_any_output(
    tmp_path: Path, s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    port = free_port()
    server = LocalRedis(
        tmp_path / "redis",
        port=port,
        url=f"redis://archiver:{REDIS_PASSWORD}@127.0.0.1:{port}/0",
        extra_args=[
            "--user",
            "default",
            "off",
            "--user",
            "archiver",
            "on",
            f">{REDIS_PASSWORD}",
            "~*",
            "&*",
            "+@all",
        ],
    ).start()
    outputs: list[str] = []
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port, password="wrong", username="archiver").ping()
        system = System(
            redis_url=server.url,
            tmp=tmp_path,
            sink_url=s3_endpoint.sink_url(s3_bucket),
            env_overrides={"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET},
        )
        try:
            _archive_three_entries(system)
            env = {k: v for k, v in system.env().items() if k.startswith(("ARCHIVER_", "AWS_"))}
            bad_url = server.url.replace(REDIS_PASSWORD, "nope" + REDIS_PASSWORD[::-1])
            wrong = {**env, "ARCHIVER_REDIS_URL": bad_url}
            for args, environment, status in [
                (["inspect", "partitions"], env, 0),
                (["inspect", "partition", "default", "1", "--json"], env, 0),
                (["inspect", "rejected"], env, 0),
                (["ls", "default", "1"], env, 0),
                (["verify", "default", "1"], env, 0),
                (["restore", "default", "1", "--dest", str(tmp_path / "r")], env, 0),
                (["notify", "default", "1", "1", "3"], env, 0),
                (["inspect", "partitions"], wrong, 1),
                (["--help"], env, 0),
                (["scheduler", "--help"], env, 0),
            ]:
                result = CliRunner().invoke(main, args, env=environment)
                # A traceback stays out of ``output``: an uncaught exception must not
                # happen, and its text is searched too.
                assert result.exit_code == status, (args, result.output, result.exception)
                if result.exc_info is not None and not isinstance(result.exception, SystemExit):
                    outputs.append("".join(traceback.format_exception(*result.exc_info)))
                outputs.append(result.output)
            # A scheduler that cannot authenticate says so, without the password.
            failing = system.start_scheduler(env={**wrong, "ARCHIVER_METRICS_PORT": "0"})
            wait_for(lambda: "lost its connection" in failing.output(), what="the auth error")
            failing.stop()
        finally:
            system.close()
            outputs.extend(p.output() for p in system.processes)
    finally:
        server.stop()
    everything = "\n".join(outputs)
    assert "invalid username-password pair" in everything or "WRONGPASS" in everything
    for secret in (REDIS_PASSWORD, AWS_SECRET, AWS_KEY_ID, REDIS_PASSWORD[::-1]):
        assert secret not in everything, f"{secret!r} leaked"
