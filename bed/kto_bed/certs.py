"""A private CA and the certificates the control plane needs (serving, admin client, SA signing)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import network
from .network import NODE_NAME

_VALIDITY = dt.timedelta(days=3650)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _load_ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _make_ca(pki: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kto-bed-ca"))
        .issuer_name(_name("kto-bed-ca"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(pki / "ca.key", key)
    (pki / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(pki: Path, stem: str, cn: str, *, org: str | None = None, server: bool = False,
           sans: list[x509.GeneralName] | None = None) -> None:
    ca_cert, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(pki / f"{stem}.key", key)
    (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ips(*addresses: str) -> list[x509.GeneralName]:
    return [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]


APISERVER_SANS: list[x509.GeneralName] = [
    x509.DNSName("localhost"),
    x509.DNSName("kubernetes"),
    x509.DNSName("kubernetes.default"),
    x509.DNSName("kubernetes.default.svc"),
    x509.DNSName("kubernetes.default.svc.cluster.local"),
    *_ips("127.0.0.1", network.BED_IP, network.KUBERNETES_SERVICE_IP),
]

# (file stem, common name, organization); organization is the Kubernetes group.
CLIENTS = [
    ("admin", "kto-bed-admin", "system:masters"),
    ("controller-manager", "system:kube-controller-manager", None),
    ("scheduler", "system:kube-scheduler", None),
    ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
    ("kubelet", f"system:node:{NODE_NAME}", "system:nodes"),
    ("kube-proxy", "system:kube-proxy", None),
]


def ensure_pki(pki: Path) -> None:
    """Create every key and certificate once; existing files are kept so restarts reuse them."""
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        _make_ca(pki)
    if not (pki / "apiserver.crt").exists():
        _issue(pki, "apiserver", "kube-apiserver", server=True, sans=APISERVER_SANS)
    if not (pki / "kubelet-serving.crt").exists():
        _issue(pki, "kubelet-serving", NODE_NAME, server=True,
               sans=[x509.DNSName(NODE_NAME), *_ips(network.BED_IP)])
    for stem, cn, org in CLIENTS:
        if not (pki / f"{stem}.crt").exists():
            _issue(pki, stem, cn, org=org)
    if not (pki / "sa.key").exists():
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(pki / "sa.key", sa)
        (pki / "sa.pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
