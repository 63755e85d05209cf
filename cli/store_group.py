"""`castkeep store copy SRC DST`: move a store between a folder (SQLite) and PostgreSQL, either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import emit, json_option
from .store_commands import StoreLocation


@click.group()
def store() -> None:
    """Whole-store operations."""


@store.command("copy")
@click.argument("source", type=StoreLocation())
@click.argument("destination", type=StoreLocation())
@json_option
def copy_store(source: Path | str, destination: Path | str, as_json: bool) -> None:
    """Copy every character of store SOURCE into DESTINATION, a new or empty store (a folder, or a
    postgresql://USER@HOST:PORT/DB URL): rows, face crops, every embedding space and the store's meta,
    bit for bit; the destination is then verified and compared with the source."""
    from ..identity.store import Store
    from ..identity.store_copy import copy

    with Store.open(source) as src, Store.open(destination, create=True) as dst:
        report = copy(src, dst)

    def text(r: dict[str, Any]) -> str:
        state = "ok" if r["verify"]["ok"] else "PROBLEMS: " + "; ".join(r["verify"]["problems"])
        return (f"copied {r['characters']} character(s), {r['references']} reference(s) from {r['source']} to "
                f"{r['destination']}; verify: {state}")

    emit(report, as_json, text)
