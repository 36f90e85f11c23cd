"""``shoal store``: what the store takes on disk, and freeing the parts you choose."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

import typer

from shoal.cli import app

if TYPE_CHECKING:
    from shoal.usage import StoreUsage

STORE_EXAMPLES = """
Examples:

  shoal store                                   # disk used by datasets, models, snapshots, caches, downloads

  shoal store --clear-cache --clear-downloads   # both are made again when next needed

  shoal store --clear-snapshots digits-lenet --yes     # or --clear-all-snapshots --yes
"""

_WHAT = {
    "datasets": ("dataset", "datasets"),
    "models": ("model", "models"),
    "snapshots": ("model", "models"),
    "downloads": ("model", "models"),
    "caches": ("prepared backbone", "prepared backbones"),
}
_FREE = {
    "snapshots": "--clear-snapshots MODEL --yes",
    "downloads": "--clear-downloads",
    "caches": "--clear-cache",
}


@app.command("store", epilog=STORE_EXAMPLES)
def store_command(
    clear_cache: bool = typer.Option(False, "--clear-cache",
                                     help="Delete the prepared backbones; the next fine-tuning prepares them again."),
    clear_downloads: bool = typer.Option(False, "--clear-downloads",
                                         help="Delete the web app's kept .shoal downloads; made again on request."),
    clear_snapshots: Optional[list[str]] = typer.Option(
        None, "--clear-snapshots", metavar="MODEL",
        help="Delete this model's kept snapshots (repeat for more); their epochs can no longer be exported. "
             "Needs --yes."),
    clear_all_snapshots: bool = typer.Option(False, "--clear-all-snapshots",
                                             help="Delete the kept snapshots of every model. Needs --yes."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm deleting snapshots (it cannot be undone)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: bytes by kind and by part."),
) -> None:
    """Show the disk used by datasets, models, snapshots, downloads, caches and samples; free what you choose.

    The best epoch's weights, the resume point and the bundle of each model are never freed here
    (delete a model with 'shoal model delete', a dataset with 'shoal dataset delete').
    """
    from shoal import usage
    from shoal.errors import ConfigError
    from shoal.store import Store

    store = Store()
    snapshots: list[str] | None = list(clear_snapshots or [])
    if clear_all_snapshots and snapshots:
        raise ConfigError("--clear-all-snapshots already clears every model's snapshots; drop --clear-snapshots")
    if clear_all_snapshots:
        snapshots = None
    wants_snapshots = clear_all_snapshots or bool(snapshots)
    if wants_snapshots and not yes:
        found = usage.usage(store).of("snapshots")
        held = [p for p in found if snapshots is None or p.name in snapshots]
        whose = "every model" if snapshots is None else ", ".join(snapshots)
        raise ConfigError(f"deleting the snapshots of {whose} ({_human(sum(p.bytes for p in held))}) cannot be "
                          f"undone: their epochs can no longer be exported; add --yes to delete them")
    freed: list[tuple[str, int]] = []
    if wants_snapshots:
        freed.append((f"snapshots of {'every model' if snapshots is None else ', '.join(snapshots)}",
                      usage.clear_snapshots(snapshots, store=store)))
    if clear_cache:
        freed.append(("the cache (prepared backbones)", usage.clear_cache(store)))
    if clear_downloads:
        freed.append(("the web app's downloads", usage.clear_downloads(store)))
    if freed:
        if as_json:
            typer.echo(json.dumps({"freed": {what: n for what, n in freed}}))
        for what, n in freed if not as_json else ():
            typer.echo(f"Freed {_human(n)}: {what}")
        return
    report = usage.usage(store)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        return
    _print(report)


def _print(report: StoreUsage) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from shoal.usage import KINDS

    table = Table(title=f"{escape(str(report.home))}: {_human(report.total)}", title_justify="left",
                  box=None, pad_edge=False)
    table.add_column("kind", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("of", overflow="fold")
    table.add_column("free with", no_wrap=True)
    for kind in KINDS:
        parts = report.of(kind)
        if kind in _WHAT:
            one, many = _WHAT[kind]
            of = f"{len(parts)} {one if len(parts) == 1 else many}"
            if kind in ("snapshots", "downloads"):
                files = sum(p.files for p in parts)
                of = f"{files} file{'' if files == 1 else 's'} of {of}"
        else:
            of = {"samples": "the built-in sample's images", "other": "index, uploads, unfinished builds"}[kind]
        table.add_row(kind, _human(report.bytes(kind)), of, _FREE.get(kind, "") if parts else "")
    Console(highlight=False, soft_wrap=True).print(table)


def _human(n: int) -> str:
    """Bytes in decimal units: ``0 B``, ``980 B``, ``12.3 kB``, ``4.5 MB``, ``1.2 GB``.

    >>> _human(0), _human(999), _human(12_345), _human(5_800_000_000)
    ('0 B', '999 B', '12.3 kB', '5.8 GB')
    """
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
