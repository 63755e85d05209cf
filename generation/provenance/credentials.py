"""C2PA Content Credentials for castkeep's outputs (c2pa-python): a manifest signed into the PNG with a
certificate and key the user provides, saying the image was created by a trained model (`c2pa.actions`:
`c2pa.created`, digitalSourceType trainedAlgorithmicMedia), by which castkeep, from which models, and of
which character: its name and fingerprints (the face model's, the SHA-256 of its vector). Never face data:
no embedding, no face crop, no reference photo.

Reading verifies the signature, the certificate chain and the hash of every byte outside the manifest. A
certificate no trust list anchors (a self-signed chain, a company's own CA) reads as `Valid` with the single
failure `signingCredential.untrusted`; pass its root as `trust_anchors` and the same file reads `Trusted`.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import __version__
from ...errors import ConfigError, MissingDependencyError

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION_LABEL = "org.castkeep.generation"
UNTRUSTED = "signingCredential.untrusted"
# What of an output's sidecar enters the manifest: model identities and hashes, the character's name and
# fingerprints. Listed, not filtered, so a field added to the sidecar later never leaks into it unseen.
MODEL_FIELDS = ("base_model", "base_model_kind", "base_model_hash", "ip_adapter_file", "ip_adapter_hash",
                "ip_adapter_variant", "face_analyzer", "conditioning")
CHARACTER_FIELDS = ("name", "source", "fingerprint", "vector_sha256")
# c2pa's own settings: no JPEG thumbnail of the image inside the manifest (30 kB and more per output,
# a copy of pixels the file already holds).
_SIGNING_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}
_ONE_PIXEL_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c49444154"
                               "789c63f8cfc000000301010018dd8db00000000049454e44ae426082")


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError:
        raise MissingDependencyError("Content Credentials need c2pa-python: pip install 'castkeep[generate]'") from None
    return c2pa


def _algorithm(key_pem: bytes, key_path: Path) -> str:
    """The C2PA signing algorithm the key is for: ES256/384/512 (EC P-256/384/521), PS256 (RSA), Ed25519."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not an unencrypted PEM private key ({' '.join(str(exc).split())[:120]})",
                          path=key_path) from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curves = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in curves:
            return curves[key.curve.name]
    elif isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ConfigError("C2PA signs with EC P-256/P-384/P-521, RSA or Ed25519 keys, not this one", path=key_path)


def _signer_name(cert_pem: bytes) -> dict[str, str | None]:
    """The signing certificate's subject common name and organisation (the first certificate of the chain)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    subject = x509.load_pem_x509_certificate(cert_pem).subject

    def first(oid: Any) -> str | None:
        values = subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None

    return {"common_name": first(NameOID.COMMON_NAME), "organization": first(NameOID.ORGANIZATION_NAME)}


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the C2PA {what} ({exc.strerror or exc})", path=path) from None


@dataclass(frozen=True)
class C2paCredentials:
    """A signing certificate chain (PEM: the signer's certificate first, then its issuers) and its key."""

    certificate: bytes
    key: bytes
    algorithm: str
    signer: dict[str, str | None]

    @classmethod
    def from_files(cls, certificate: str | os.PathLike[str], key: str | os.PathLike[str]) -> C2paCredentials:
        """Read and check a certificate chain and key by signing a one-pixel PNG with them: a certificate
        C2PA refuses (expired, no digitalSignature key usage, a self-signed end-entity, a key of another
        certificate) is a one-line ConfigError before any model loads."""
        _c2pa()
        cert_path, key_path = Path(certificate), Path(key)
        cert_pem, key_pem = _read(cert_path, "certificate"), _read(key_path, "key")
        algorithm = _algorithm(key_pem, key_path)
        try:
            signer = _signer_name(cert_pem)
        except ValueError as exc:
            raise ConfigError(f"not a PEM certificate ({' '.join(str(exc).split())[:120]})", path=cert_path) from None
        credentials = cls(certificate=cert_pem, key=key_pem, algorithm=algorithm, signer=signer)
        try:
            signed = credentials.sign_png(_ONE_PIXEL_PNG, output_manifest("check.png", {"character": {}}))
        except ConfigError as exc:
            raise ConfigError(f"{cert_path} and {key_path}: {exc}") from None
        # Read it back: some c2pa releases sign with a key that is not the certificate's without a word.
        problems = (read_credentials(signed, "image/png") or {"problems": [{"code": "no manifest written"}]})["problems"]
        if problems:
            codes = ", ".join(str(problem["code"]) for problem in problems)
            raise ConfigError(f"{cert_path} and {key_path}: a test signature does not verify ({codes})")
        return credentials

    def record(self) -> dict[str, Any]:
        """What an output's sidecar says of its Content Credentials."""
        return {"algorithm": self.algorithm, "signer": self.signer}

    def sign_png(self, data: bytes, manifest: dict[str, Any]) -> bytes:
        """`data` (a PNG file) with `manifest` signed into it (a `caBX` chunk)."""
        c2pa = _c2pa()
        try:
            context = c2pa.Context.from_dict(_SIGNING_SETTINGS)
            info = c2pa.C2paSignerInfo(self.algorithm, self.certificate, self.key, None)
            with c2pa.Signer.from_info(info) as signer, c2pa.Builder(json.dumps(manifest), context=context) as builder:
                signed = io.BytesIO()
                builder.sign(signer, "image/png", io.BytesIO(data), signed)
        except c2pa.C2paError as exc:
            raise ConfigError(f"C2PA signing failed: {' '.join(str(exc).split())[:200]}") from None
        return signed.getvalue()


def output_manifest(title: str, sidecar: dict[str, Any]) -> dict[str, Any]:
    """The manifest of one output, from its sidecar: created by castkeep with a trained model, its models
    and its character(s), by name and fingerprint."""
    agent = {"name": "castkeep", "version": sidecar.get("castkeep_version", __version__)}
    models = sidecar.get("models") or {}
    characters = sidecar.get("characters") or [sidecar["character"]]
    generation = {
        "generator": agent,
        "models": {field: models.get(field) for field in MODEL_FIELDS},
        "characters": [{field: character.get(field) for field in CHARACTER_FIELDS} for character in characters],
        "watermark": (sidecar.get("provenance") or {}).get("watermark"),
    }
    return {
        "claim_generator_info": [agent], "title": title, "format": "image/png",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.created", "softwareAgent": agent,
                                                            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA}]}},
            {"label": ASSERTION_LABEL, "data": generation},
        ],
    }


def _assertion(manifest: dict[str, Any], *labels: str) -> Any:
    return next((a.get("data") for a in manifest.get("assertions", []) if a.get("label") in labels), None)


def read_credentials(data: bytes, mime_type: str, *, trust_anchors: bytes | None = None) -> dict[str, Any] | None:
    """The Content Credentials a file (its bytes and MIME type) carries, verified; None when it has none.

    `validation_state` is c2pa's: Trusted (signed by a certificate `trust_anchors` or a trust list anchors),
    Valid (intact, signer not anchored), Invalid. `problems` lists every failure but the untrusted signer."""
    c2pa = _c2pa()
    settings = {} if trust_anchors is None else {"trust": {"trust_anchors": trust_anchors.decode("utf-8", "replace")}}
    try:
        reader = c2pa.Reader.try_create(mime_type, io.BytesIO(data), context=c2pa.Context.from_dict(settings))
        if reader is None:
            return None
        with reader:
            manifest = reader.get_active_manifest() or {}
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as exc:
        return {"error": " ".join(str(exc).split())[:200]}
    failures = [{"code": f.get("code"), "explanation": f.get("explanation")}
                for f in (results.get("activeManifest") or {}).get("failure", [])]
    actions = (_assertion(manifest, "c2pa.actions", "c2pa.actions.v2") or {}).get("actions", [])
    signature = manifest.get("signature_info") or {}
    return {
        "validation_state": state,
        "failures": failures,
        "problems": [f for f in failures if f["code"] != UNTRUSTED],
        "signer": {"common_name": signature.get("common_name"), "issuer": signature.get("issuer"),
                   "algorithm": signature.get("alg")},
        "claim_generator": manifest.get("claim_generator_info"),
        "title": manifest.get("title"),
        "actions": [{key: action.get(key) for key in ("action", "digitalSourceType", "softwareAgent")}
                    for action in actions],
        "castkeep": _assertion(manifest, ASSERTION_LABEL),
        "label": manifest.get("label"),
    }
