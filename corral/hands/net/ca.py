"""The egress proxy's certificate authority: what lets it put vault credentials into HTTPS requests.

For a CONNECT to a host that one of the session's `environment_variable` credentials names, the proxy ends the
sandbox's TLS itself, with a leaf certificate for that host signed by this CA, and opens its own, verified TLS
connection upstream (see `egress.py`). Every other CONNECT stays an opaque tunnel.

The CA is generated once per data dir, in `<data-dir>/egress-ca/`: `ca.pem` (the certificate, public),
`ca.key.sealed` (its private key, sealed with the vault's secret key like a credential, so a copy of the data
dir without `CORRAL_SECRET_KEY` does not yield it) and `ca-certificates.crt` (the system's roots plus this CA,
rewritten at each start: the bundle a sandbox with such a credential trusts). The key never leaves the server
process; no sandbox ever sees it. To rotate the CA, stop the server, delete `<data-dir>/egress-ca/` and start it:
sandboxes started from then on trust the new one.

Leaf certificates (ECDSA P-256, valid `_LEAF_DAYS`) are minted per host on first use and cached in memory as
ready server-side `ssl.SSLContext`s that offer only `http/1.1` in ALPN, the one protocol the proxy parses.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.vault.crypto import SecretBox, SecretUnavailable

log = logging.getLogger("corral.egress")

# An extra root the proxy trusts upstream, besides the system's: only for tests, whose loopback HTTPS server
# cannot hold a public certificate. Never a way to skip verification.
UPSTREAM_CA_ENV = "CORRAL_EGRESS_UPSTREAM_CA"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_DIR_NAME = "egress-ca"
_SEAL_CONTEXT = "corral-egress-ca"
_CA_YEARS = 10
_LEAF_DAYS = 30
_MAX_CACHED_LEAVES = 1024
ALPN = ["http/1.1"]


class CAError(Exception):
    """The egress CA cannot be loaded (its key was sealed under another secret key, or its files are damaged)."""


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM."""

    cert_pem: bytes
    key_pem: bytes


class EgressCA:
    """A CA certificate and key that mint leaf certificates for hosts (`server_context`)."""

    def __init__(
        self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, bundle_path: Path | None = None
    ) -> None:
        self.cert = cert
        self._key = key
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.bundle_path = bundle_path  # system roots + this CA, for sandboxes (None: not written)
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())  # one key for every leaf this process mints
        self._contexts: dict[str, tuple[ssl.SSLContext, datetime.datetime]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EgressCA(subject={self.cert.subject.rfc4514_string()!r})"

    @classmethod
    def generate(cls, common_name: str = "Corral egress CA") -> EgressCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        start = _now() - datetime.timedelta(hours=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=365 * _CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load_or_create(cls, data_dir: Path, box: SecretBox) -> EgressCA:
        """The data dir's CA (created on first use), with its trust bundle rewritten from the system's roots."""
        directory = data_dir / CA_DIR_NAME
        cert_path, key_path = directory / "ca.pem", directory / "ca.key.sealed"
        if key_path.exists() and cert_path.exists():
            try:
                sealed = box.open(key_path.read_text().strip(), context=_SEAL_CONTEXT)
                key = serialization.load_pem_private_key(sealed["key"].encode(), password=None)
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except (SecretUnavailable, OSError, ValueError, KeyError) as exc:
                raise CAError(
                    f"the egress CA in {directory} cannot be loaded ({exc}); delete that directory to generate a "
                    "new one"
                ) from exc
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise CAError(f"the egress CA key in {key_path} is not an EC key; delete {directory}")
            ca = cls(cert, key)
        else:
            ca = cls.generate()
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            key_pem = ca._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            _write(key_path, box.seal({"key": key_pem.decode()}, context=_SEAL_CONTEXT).encode() + b"\n", 0o600)
            _write(cert_path, ca.cert_pem, 0o644)
            log.info("generated the egress proxy's CA in %s (its key sealed with the vault key)", directory)
        system = SYSTEM_BUNDLE.read_bytes() if SYSTEM_BUNDLE.exists() else b""
        ca.bundle_path = directory / "ca-certificates.crt"
        _write(ca.bundle_path, system.rstrip(b"\n") + b"\n" + ca.cert_pem, 0o644)
        return ca

    def issue(self, *hosts: str, days: int = _LEAF_DAYS) -> Issued:
        """A leaf certificate for `hosts` (names or IP addresses) signed by this CA, with its own new key."""
        key = ec.generate_private_key(ec.SECP256R1())
        return Issued(self._leaf(hosts, key, days), _key_pem(key))

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side TLS context presenting a leaf certificate for `host` (minted once, then cached)."""
        with self._lock:
            cached = self._contexts.get(host)
            if cached is not None and cached[1] > _now() + datetime.timedelta(days=1):
                return cached[0]
            if len(self._contexts) >= _MAX_CACHED_LEAVES:
                self._contexts.clear()
            context = server_context(Issued(self._leaf((host,), self._leaf_key, _LEAF_DAYS), _key_pem(self._leaf_key)))
            self._contexts[host] = (context, _now() + datetime.timedelta(days=_LEAF_DAYS))
            return context

    def _leaf(self, hosts: tuple[str, ...], key: ec.EllipticCurvePrivateKey, days: int) -> bytes:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        start = _now() - datetime.timedelta(hours=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


def server_context(issued: Issued) -> ssl.SSLContext:
    """A server-side TLS context presenting `issued`, offering only HTTP/1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    # `ssl` loads a certificate chain only from files: a private file, removed as soon as it is loaded.
    with tempfile.TemporaryDirectory(prefix="corral-leaf-") as directory:
        path = Path(directory) / "leaf.pem"
        _write(path, issued.cert_pem + issued.key_pem, 0o600)
        context.load_cert_chain(path)
    return context


def upstream_context(extra_ca: Path | None = None) -> ssl.SSLContext:
    """The client-side context for intercepted upstreams: the system's roots (plus `extra_ca`, for tests), host
    names checked, only HTTP/1.1 offered."""
    context = ssl.create_default_context()
    if extra_ca is not None:
        context.load_verify_locations(cafile=str(extra_ca))
    context.set_alpn_protocols(ALPN)
    return context


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, content: bytes, mode: int) -> None:
    """Write `content` to `path` with `mode`, atomically (a sandbox mounting the file never sees half of it)."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
