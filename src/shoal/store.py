"""The store: one folder per dataset and per model under ``SHOAL_HOME``, indexed by SQLite.

The CLI and the web app share it, so a dataset built from one shows up in the other.
A dataset is written into a staging folder and only renamed into place and entered
in the index once complete, so a half-written dataset never appears.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shoal.errors import AlreadyExistsError, ConfigError, NotFoundError

Kind = Literal["dataset", "model"]
KINDS: tuple[Kind, ...] = ("dataset", "model")
STATUSES = ("queued", "running", "done", "failed", "interrupted", "aborted")

_NAME_RE = re.compile(r"^[^\W][\w.\-]{0,99}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    path TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, name)
)
"""


def default_home() -> Path:
    """Return the store folder: ``$SHOAL_HOME`` if set, else ``~/.shoal``."""
    env = os.environ.get("SHOAL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".shoal"


def check_name(name: str, kind: str = "dataset") -> str:
    """Return ``name`` if it can name a stored dataset or model.

    Raises:
        ConfigError: if the name is empty, too long, or has characters other than
            letters, digits, ``.``, ``_`` and ``-`` (it becomes a folder name).
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is not allowed: use 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (for example 'dolphins-v2')"
        )
    return name


@dataclass(frozen=True)
class Entry:
    """One row of the index: a stored dataset or model."""

    kind: Kind
    name: str
    status: str
    created: float
    updated: float
    path: Path
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "created": self.created,
            "updated": self.updated,
            "path": str(self.path),
            "summary": self.summary,
        }


class Store:
    """The datasets and models under one home folder.

    Args:
        home: the store folder; ``None`` means :func:`default_home`.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()

    # -- layout ---------------------------------------------------------------------------
    def folder(self, kind: Kind, name: str) -> Path:
        """Return where the entry ``name`` of ``kind`` lives (whether or not it exists)."""
        return self.home / f"{kind}s" / name

    @property
    def db_path(self) -> Path:
        return self.home / "index.sqlite"

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.home.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_SCHEMA)
            with con:
                yield con
        finally:
            con.close()

    # -- reading --------------------------------------------------------------------------
    def get(self, kind: Kind, name: str) -> Entry:
        """Return the entry, or raise :class:`NotFoundError` listing what exists."""
        with self._db() as con:
            row = con.execute(
                "SELECT kind, name, status, created, updated, path, summary FROM entries "
                "WHERE kind = ? AND name = ?",
                (kind, name),
            ).fetchone()
        if row is None:
            names = [e.name for e in self.list(kind)]
            known = ", ".join(repr(n) for n in names) if names else "none yet"
            raise NotFoundError(f"no {kind} named {name!r} in {self.home} (known: {known})")
        return _entry(row)

    def exists(self, kind: Kind, name: str) -> bool:
        with self._db() as con:
            return (
                con.execute("SELECT 1 FROM entries WHERE kind = ? AND name = ?", (kind, name)).fetchone()
                is not None
            )

    def list(self, kind: Kind | None = None) -> list[Entry]:
        """Return the entries of ``kind`` (or all), oldest first."""
        query = "SELECT kind, name, status, created, updated, path, summary FROM entries"
        args: tuple[Any, ...] = ()
        if kind is not None:
            query += " WHERE kind = ?"
            args = (kind,)
        with self._db() as con:
            rows = con.execute(query + " ORDER BY created, name", args).fetchall()
        return [_entry(r) for r in rows]

    # -- writing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self, kind: Kind, name: str, *, summary: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield an empty folder to write a new entry into; commit it when the block ends.

        On success the folder is renamed to its final place and the entry indexed with
        status ``done``; on any exception the folder is removed and nothing is indexed.

        Raises:
            AlreadyExistsError: if ``name`` is already taken.
        """
        check_name(name, kind)
        self._refuse_existing(kind, name)
        tmp_root = self.home / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{kind}-{name}-", dir=tmp_root))
        final_summary: dict[str, Any] = dict(summary or {})
        try:
            yield tmp
            self._refuse_existing(kind, name)
            final = self.folder(kind, name)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # left over from an entry deleted from the index by hand
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._insert(kind, name, "done", final, final_summary)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def reserve(self, kind: Kind, name: str, *, status: str = "queued", summary: dict[str, Any] | None = None) -> Entry:
        """Create the entry's folder and index it at once (for models, visible while they train)."""
        check_name(name, kind)
        self._refuse_existing(kind, name)
        folder = self.folder(kind, name)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        self._insert(kind, name, status, folder, summary or {})
        return self.get(kind, name)

    def update(self, kind: Kind, name: str, *, status: str | None = None, summary: dict[str, Any] | None = None) -> Entry:
        """Change an entry's status and/or merge keys into its summary."""
        if status is not None and status not in STATUSES:
            raise ConfigError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        entry = self.get(kind, name)
        merged = {**entry.summary, **(summary or {})}
        with self._db() as con:
            con.execute(
                "UPDATE entries SET status = ?, summary = ?, updated = ? WHERE kind = ? AND name = ?",
                (status or entry.status, json.dumps(merged), time.time(), kind, name),
            )
        return self.get(kind, name)

    def delete(self, kind: Kind, name: str) -> None:
        """Remove an entry and its folder."""
        entry = self.get(kind, name)
        with self._db() as con:
            con.execute("DELETE FROM entries WHERE kind = ? AND name = ?", (kind, name))
        shutil.rmtree(entry.path, ignore_errors=True)

    def _refuse_existing(self, kind: Kind, name: str) -> None:
        if self.exists(kind, name):
            raise AlreadyExistsError(
                f"a {kind} named {name!r} already exists in {self.home}: choose another name, "
                f"or delete it first with 'shoal {kind} delete {name}'"
            )

    def _insert(self, kind: Kind, name: str, status: str, path: Path, summary: dict[str, Any]) -> None:
        now = time.time()
        with self._db() as con:
            con.execute(
                "INSERT INTO entries (kind, name, status, created, updated, path, summary) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, name, status, now, now, str(path), json.dumps(summary)),
            )


def _entry(row: tuple[Any, ...]) -> Entry:
    kind, name, status, created, updated, path, summary = row
    return Entry(kind, name, status, created, updated, Path(path), json.loads(summary))
