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


# -- jobs: the web app's queue of dataset builds and trainings ----------------------------------
# A job is one unit of work a worker process runs (build a dataset, train or resume a model);
# its row holds the parameters, the status (one of STATUSES), the worker's pid, progress and
# any error. ``lane`` groups jobs that must not run at the same time: ``data`` for dataset
# builds, the device (``cpu``, ``cuda``...) for trainings; each lane runs one job at a time,
# oldest first.
_JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    lane TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    progress TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    pid INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL
)
"""
_JOB_COLUMNS = "id, kind, target, lane, status, params, progress, error, pid, created, started, finished"
_UNSET: Any = object()


@dataclass(frozen=True)
class Job:
    """One row of the job queue."""

    id: int
    kind: str
    target: str
    lane: str
    status: str
    params: dict[str, Any]
    progress: dict[str, Any]
    error: str | None
    pid: int | None
    created: float
    started: float | None
    finished: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "target": self.target, "lane": self.lane, "status": self.status,
            "params": self.params, "progress": self.progress, "error": self.error, "pid": self.pid,
            "created": self.created, "started": self.started, "finished": self.finished,
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


    # -- jobs (the web app's queue) -------------------------------------------------------
    @contextlib.contextmanager
    def _jobs_db(self) -> Iterator[sqlite3.Connection]:
        with self._db() as con:
            con.execute(_JOBS_SCHEMA)
            yield con

    def add_job(self, kind: str, target: str, *, lane: str, params: dict[str, Any] | None = None) -> Job:
        """Queue a job and return it (status ``queued``)."""
        with self._jobs_db() as con:
            cur = con.execute(
                "INSERT INTO jobs (kind, target, lane, status, params, created) VALUES (?, ?, ?, 'queued', ?, ?)",
                (kind, target, lane, json.dumps(params or {}), time.time()),
            )
            job_id = int(cur.lastrowid or 0)
        return self.get_job(job_id)

    def get_job(self, job_id: int) -> Job:
        """Return job ``job_id``, or raise :class:`NotFoundError`."""
        with self._jobs_db() as con:
            row = con.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id} in {self.home}")
        return _job(row)

    def list_jobs(self, *, status: str | tuple[str, ...] | None = None, kind: str | tuple[str, ...] | None = None,
                  target: str | None = None, lane: str | None = None, limit: int | None = None) -> list[Job]:
        """Return the jobs matching every given filter, oldest first (the newest ``limit`` when given)."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("status", status), ("kind", kind)):
            if value is not None:
                values = (value,) if isinstance(value, str) else tuple(value)
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                args.extend(values)
        for column, value in (("target", target), ("lane", lane)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        query = f"SELECT {_JOB_COLUMNS} FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        if limit is not None:
            query = f"SELECT * FROM ({query} ORDER BY id DESC LIMIT {int(limit)})"
        with self._jobs_db() as con:
            rows = con.execute(query + " ORDER BY id", args).fetchall()
        return [_job(r) for r in rows]

    def update_job(self, job_id: int, *, status: str | None = None, progress: dict[str, Any] | None = None,
                   error: Any = _UNSET, pid: Any = _UNSET, started: Any = _UNSET, finished: Any = _UNSET,
                   only_if: tuple[str, ...] | None = None) -> Job:
        """Change a job's fields (``progress`` keys are merged in) and return the job.

        ``only_if`` makes the change happen only while the job's status is one of those
        (compare-and-set), so that a worker never overwrites an ``aborted`` set by someone else.
        """
        if status is not None and status not in STATUSES:
            raise ConfigError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        with self._jobs_db() as con:
            row = con.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no job {job_id} in {self.home}")
            job = _job(row)
            if only_if is not None and job.status not in only_if:
                return job
            sets: dict[str, Any] = {}
            guard, guard_args = "", ()
            if only_if is not None:  # checked again by the UPDATE itself: another process may have changed it
                guard, guard_args = f" AND status IN ({', '.join('?' * len(only_if))})", tuple(only_if)
            if status is not None:
                sets["status"] = status
            if progress is not None:
                sets["progress"] = json.dumps({**job.progress, **progress})
            for column, value in (("error", error), ("pid", pid), ("started", started), ("finished", finished)):
                if value is not _UNSET:
                    sets[column] = value
            if sets:
                assignments = ", ".join(f"{c} = ?" for c in sets)
                con.execute(f"UPDATE jobs SET {assignments} WHERE id = ?{guard}", (*sets.values(), job_id, *guard_args))
        return self.get_job(job_id)

    def forget_jobs(self, target: str, kinds: tuple[str, ...]) -> None:
        """Delete the finished jobs of ``kinds`` about ``target`` (after the entry itself is deleted)."""
        with self._jobs_db() as con:
            con.execute(
                f"DELETE FROM jobs WHERE target = ? AND kind IN ({', '.join('?' * len(kinds))}) "
                "AND status NOT IN ('queued', 'running')",
                (target, *kinds),
            )

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



def _job(row: tuple[Any, ...]) -> Job:
    id_, kind, target, lane, status, params, progress, error, pid, created, started, finished = row
    return Job(id_, kind, target, lane, status, json.loads(params), json.loads(progress), error, pid,
               created, started, finished)
