"""The options `generate` and `storyboard` share for marking their outputs: `--no-watermark`, and
`--c2pa-cert`/`--c2pa-key` to sign C2PA Content Credentials into every PNG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, MissingDependencyError

_OPTIONS = (
    click.option("--no-watermark", is_flag=True,
                 help="Do not embed castkeep's invisible watermark in the outputs (on by default)."),
    click.option("--c2pa-cert", type=click.Path(path_type=Path, dir_okay=False), default=None,
                 envvar="CASTKEEP_C2PA_CERT", show_envvar=True, metavar="PEM",
                 help="Sign C2PA Content Credentials into every PNG with this certificate chain (the signer's "
                      "certificate first, then its issuers); needs --c2pa-key."),
    click.option("--c2pa-key", type=click.Path(path_type=Path, dir_okay=False), default=None,
                 envvar="CASTKEEP_C2PA_KEY", show_envvar=True, metavar="PEM",
                 help="The certificate's private key (PEM, unencrypted; EC, RSA or Ed25519)."),
)


def provenance_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def make_provenance(no_watermark: bool, c2pa_cert: Path | None, c2pa_key: Path | None) -> Any:
    """The options as a `Provenance`, its certificate and key checked (a one-line error before any model loads)."""
    from ..generation.provenance.credentials import C2paCredentials
    from ..generation.provenance.output import Provenance

    if (c2pa_cert is None) != (c2pa_key is None):
        raise ConfigError("--c2pa-cert and --c2pa-key go together: C2PA signing needs the certificate and its key")
    credentials = None if c2pa_cert is None or c2pa_key is None else C2paCredentials.from_files(c2pa_cert, c2pa_key)
    provenance = Provenance(watermark=not no_watermark, credentials=credentials)
    try:
        provenance.check()
    except MissingDependencyError as exc:
        raise MissingDependencyError(f"{exc} (or pass --no-watermark)") from None
    return provenance
