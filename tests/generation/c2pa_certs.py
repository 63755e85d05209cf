"""A throwaway certificate chain for the C2PA tests, made with `cryptography`: a root CA and an end-entity
signing certificate with what C2PA asks of one (X.509 v3, digitalSignature key usage, the emailProtection
extended key usage, not a CA, issued by another certificate). No trust list anchors the root, so signatures
read as valid but untrusted unless the root is passed as a trust anchor. (Importable as `c2pa_certs`.)"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SIGNER = "castkeep test signer"
ORGANIZATION = "castkeep tests"


@dataclass(frozen=True)
class Chain:
    cert: Path  # the signer's certificate, then the CA's (PEM)
    key: Path  # the signer's key (PEM, PKCS#8)
    ca: Path  # the root alone: the trust anchor


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)])


def _usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=signing, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not signing, crl_sign=not signing,
                         encipher_only=False, decipher_only=False)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_chain(folder: Path, *, self_signed_signer: bool = False) -> Chain:
    """Write cert.pem (signer + CA), key.pem and ca.pem into `folder`. `self_signed_signer`: the signing
    certificate issues itself (which C2PA refuses for an end-entity certificate)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("castkeep test CA")).issuer_name(_name("castkeep test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_usage(signing=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_key = key if self_signed_signer else ca_key
    signer = (x509.CertificateBuilder().subject_name(_name(SIGNER))
              .issuer_name(_name(SIGNER) if self_signed_signer else ca.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(_usage(signing=True), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
              .sign(issuer_key, hashes.SHA256()))
    chain = Chain(cert=folder / "cert.pem", key=folder / "key.pem", ca=folder / "ca.pem")
    chain.cert.write_bytes(_pem(signer) + (b"" if self_signed_signer else _pem(ca)))
    chain.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    chain.ca.write_bytes(_pem(ca))
    return chain
