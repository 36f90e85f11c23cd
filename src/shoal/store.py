"""The store: one folder per dataset and per model under ``SHOAL_HOME``, indexed by SQLite.

The CLI and the web app share it, so a dataset built from one shows up in the other.
A dataset is written into a staging folder and only renamed into place and entered
in the index once complete, so a half-written dataset never appears.

The index keeps each entry's folder relative to the home (``datasets/<name>``), so a store
copied or moved elsewhere (``cp -a H1 H2``) reads and deletes only its own files. A name is
taken by a unique insert before any file is touched: a dataset's by a row in ``builds``
while it is built, a model's by its entry. Work folders under ``tmp/`` are each held by a
lock on ``<folder>.lock``; one whose lock is free belongs to a process that is gone and is
removed by :meth:`Store.sweep` at the next build.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shoal.errors import AlreadyExistsError, ConfigError, NoSpaceError, NotFoundError, ShoalError, StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: work folders are then removed by age only
    fcntl = None  # type: ignore[assignment]

Kind = Literal["dataset", "model"]
KINDS: tuple[Kind, ...] = ("dataset", "model")
STATUSES = ("queued", "running", "done", "failed", "interrupted", "aborted")
AssetKind = Literal["network", "pretrained", "upload"]
ASSET_FOLDERS: dict[str, str] = {"network": "networks", "pretrained": "pretrained", "upload": "uploads"}
"""Files kept beside the indexed entries: uploaded network definitions (``networks/*.py``),
uploaded weights (``pretrained/<name>/``) and uploads being unpacked (``uploads/``)."""

# "@" separates a dataset's version ("birds@2") and appears in the models named after one.
_NAME_RE = re.compile(r"[^\W][\w.\-@]{0,99}\Z")  # \Z, not $: "$" lets a trailing newline through
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
_BUILDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    folder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started REAL NOT NULL,
    PRIMARY KEY (kind, name)
)
"""

INDEX_FORMAT = 2
"""Version of ``index.sqlite`` (its ``user_version``): 1 (0 unset) kept absolute folder paths;
2 keeps them relative to the home and has the ``builds`` table. Older indexes are upgraded
when opened; a newer one is refused."""

STALE_UNLOCKED_S = 3600.0
"""A work folder under ``tmp/`` without a lock file (left by an older shoal) is removed once
it is this old; one with a lock file is removed as soon as its lock is free."""


def default_home() -> Path:
    """Return the store folder: ``$SHOAL_HOME`` if set, else ``~/.shoal``."""
    env = os.environ.get("SHOAL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".shoal"


def check_name(name: str, kind: str = "dataset") -> str:
    """Return ``name`` if it can name a stored dataset or model.

    Raises:
        ConfigError: if the name is empty, too long, or has characters other than
            letters, digits, ``.``, ``_``, ``-`` and ``@`` (it becomes a folder name; ``@``
            separates a dataset's version, as in ``birds@2``).
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is not allowed: use 1 to 100 letters, digits, '.', '_', '-' or '@', "
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
# oldest first. The table is made with the index (:meth:`Store._upgrade`).
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

    def assets(self, kind: AssetKind, *, create: bool = True) -> Path:
        """Return the folder of the assets of ``kind`` (:data:`ASSET_FOLDERS`), created if missing
        (``create=False``: only read, so looking leaves no empty folder behind)."""
        path = self.home / ASSET_FOLDERS[kind]
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def db_path(self) -> Path:
        return self.home / "index.sqlite"

    @property
    def tmp_path(self) -> Path:
        """``tmp/``: work folders of builds under way (each held by a lock on ``<folder>.lock``)."""
        return self.home / "tmp"

    @contextlib.contextmanager
    def _db(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (``write``: holding the write lock from the start).

        Raises:
            StoreError: the index is not a database, is damaged, or is of a newer format.
            NoSpaceError: the disk is full.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.db_path, timeout=30)
        except sqlite3.Error as exc:
            raise self._index_error(exc) from None
        try:
            try:
                _wal(con)
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version != INDEX_FORMAT:
                    self._upgrade(con, version)
                with con:
                    if write:
                        con.execute("BEGIN IMMEDIATE")
                    yield con
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                raise self._index_error(exc) from None
        finally:
            con.close()

    def _upgrade(self, con: sqlite3.Connection, version: int) -> None:
        """Bring an index of an older format (or a new, empty one) to :data:`INDEX_FORMAT`."""
        if version > INDEX_FORMAT:
            from shoal import __version__

            raise StoreError(
                f"the store index {self.db_path} has format {version}, written by a newer shoal; this shoal "
                f"(version {__version__}) reads format {INDEX_FORMAT} and older: upgrade shoal to use this store"
            )
        with con:
            con.execute("BEGIN IMMEDIATE")
            if con.execute("PRAGMA user_version").fetchone()[0] == INDEX_FORMAT:  # another process did it
                return
            con.execute(_SCHEMA)
            con.execute(_BUILDS_SCHEMA)
            con.execute(_JOBS_SCHEMA)
            # Format 1 kept absolute paths, always <home>/<kind>s/<name>: keep them relative.
            for kind, name, path in con.execute("SELECT kind, name, path FROM entries").fetchall():
                if os.path.isabs(path):
                    con.execute("UPDATE entries SET path = ? WHERE kind = ? AND name = ?",
                                (f"{kind}s/{name}", kind, name))
            con.execute(f"PRAGMA user_version = {INDEX_FORMAT}")

    def _index_error(self, exc: sqlite3.Error) -> ShoalError:
        name = _errorname(exc)
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc):
            return StoreError(f"the store index {self.db_path} stayed locked by another process for 30 s: "
                              "try again when the other shoal command has finished")
        if name == "SQLITE_FULL" or "disk is full" in str(exc):
            return NoSpaceError(f"no space left on {self.home}: the store index {self.db_path} cannot be written; "
                                "free some space and run the command again")
        return StoreError(
            f"the store index {self.db_path} is damaged ({exc}): restore it from a backup, or move it aside "
            f"(mv {self.db_path} {self.db_path}.damaged) to start an empty index; the dataset and model "
            "folders beside it are kept"
        )

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
        return self._entry(row)

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
        return [self._entry(r) for r in rows]

    def _entry(self, row: tuple[Any, ...]) -> Entry:
        kind, name, status, created, updated, path, summary = row
        return Entry(kind, name, status, created, updated, self._resolve(kind, name, path), _json_dict(summary))

    def _resolve(self, kind: Kind, name: str, stored: str) -> Path:
        """An entry's folder: always ``<home>/<kind>s/<name>`` (:meth:`folder`), what every shoal wrote.

        The stored path (relative ``<kind>s/<name>``, or absolute from an older shoal or from before
        the store was copied) is not followed, so a copy of a store never points into the original;
        a relative one climbing out of the home (``..``) was edited by hand and is refused.
        """
        if not os.path.isabs(stored) and ".." in Path(stored).parts:
            raise StoreError(f"the index entry of {kind} {name!r} points outside {self.home} ({stored}); "
                             f"it was edited by hand: set its path back to '{kind}s/{name}' in {self.db_path}")
        return self.folder(kind, name)

    # -- writing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self, kind: Kind, name: str, *, summary: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield an empty folder to write a new entry into; commit it when the block ends.

        The name is reserved first (a unique row in ``builds``, so two builds of one name
        cannot both go ahead); on success the folder is renamed to its final place and the
        entry indexed with status ``done``; on any exception the folder is removed and
        nothing is indexed. ``summary`` is read when the block ends, so the block may fill it in.

        Raises:
            AlreadyExistsError: if ``name`` is already taken, or being built by another process.
        """
        check_name(name, kind)
        self._refuse_existing(kind, name)
        self.sweep()
        with self.work_folder(f"{kind}-{name}-") as tmp, self._building(kind, name, tmp):
            yield tmp
            self._commit(kind, name, tmp, summary if summary is not None else {})

    def _commit(self, kind: Kind, name: str, tmp: Path, summary: dict[str, Any]) -> None:
        final = self.folder(kind, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        with self._db(write=True) as con:
            try:
                self._insert(con, kind, name, "done", summary)
            except sqlite3.IntegrityError:  # entered meanwhile by a shoal that does not reserve names
                raise self._exists_error(kind, name) from None
            if final.exists() or final.is_symlink():  # left over from an entry deleted from the index by hand
                self._discard(final)
            os.replace(tmp, final)  # inside the transaction: a failure here indexes nothing

    @contextlib.contextmanager
    def _building(self, kind: Kind, name: str, folder: Path) -> Iterator[None]:
        """Hold ``name`` for a build under way: a unique row in ``builds``, removed when the block ends.

        A row left by a process that is gone (the lock of its work folder is free) is taken over.
        """
        mine = (kind, name, folder.name, os.getpid(), socket.gethostname(), time.time())
        with self._db(write=True) as con:
            if con.execute("SELECT 1 FROM entries WHERE kind = ? AND name = ?", (kind, name)).fetchone():
                raise self._exists_error(kind, name)
            self._take_over_build(con, kind, name)
            con.execute("INSERT INTO builds (kind, name, folder, pid, host, started) VALUES (?, ?, ?, ?, ?, ?)", mine)
        try:
            yield
        finally:
            with contextlib.suppress(ShoalError):  # a full disk or a damaged index: the row is taken over later
                with self._db() as con:
                    con.execute("DELETE FROM builds WHERE kind = ? AND name = ? AND folder = ?",
                                (kind, name, folder.name))

    def _take_over_build(self, con: sqlite3.Connection, kind: Kind, name: str) -> None:
        """Free ``name`` of a ``builds`` row left by a process that is gone (its work folder's lock is free).

        Called inside a write transaction, before the name is taken.

        Raises:
            AlreadyExistsError: a live process is building ``name``.
        """
        row = con.execute("SELECT folder, pid, host, started FROM builds WHERE kind = ? AND name = ?",
                          (kind, name)).fetchone()
        if row is None:
            return
        other, pid, host, started = row
        if not self._work_folder_free(self.tmp_path / other):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            raise AlreadyExistsError(f"{kind} {name!r} is being built by another process (pid {pid} on {host}, "
                                     f"since {when}): wait for it to finish, or choose another name")
        con.execute("DELETE FROM builds WHERE kind = ? AND name = ?", (kind, name))

    def reserve(self, kind: Kind, name: str, *, status: str = "queued", summary: dict[str, Any] | None = None) -> Entry:
        """Index the entry and create its folder (for models, visible while they train).

        The name is taken by the insert itself, before any file is touched, so of two
        processes reserving one name the second gets :class:`AlreadyExistsError` and the
        first one's folder is never removed. A name being built (:meth:`staging`) is refused,
        unless its builder is gone.
        """
        check_name(name, kind)
        folder = self.folder(kind, name)
        with self._db(write=True) as con:
            self._take_over_build(con, kind, name)  # refused while a live process builds it
            try:
                self._insert(con, kind, name, status, summary or {})
            except sqlite3.IntegrityError:
                raise self._exists_error(kind, name) from None
            if folder.exists() or folder.is_symlink():  # left over from an entry deleted from the index by hand
                self._discard(folder)
            folder.mkdir(parents=True)
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
        """Remove an entry and its folder (``<home>/<kind>s/<name>``: never anything outside the home)."""
        self.get(kind, name)  # NotFoundError listing what exists
        folder = self.folder(kind, name)
        with self._db(write=True) as con:
            con.execute("DELETE FROM entries WHERE kind = ? AND name = ?", (kind, name))
            # Moved aside before the name is free again, so a new entry of that name is never touched.
            trash = self._set_aside(folder) if _plain_name(name) else None
        if trash is not None:
            _remove(trash)

    # -- work folders -----------------------------------------------------------------------
    @contextlib.contextmanager
    def work_folder(self, prefix: str) -> Iterator[Path]:
        """Yield a new empty folder under ``tmp/``, held by a lock until the block ends, then removed.

        The lock (on ``<folder>.lock``) is released by the system when the process dies,
        so :meth:`sweep` tells the folder of a killed build from a live one.
        """
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        fd, lock_name = tempfile.mkstemp(prefix=prefix, suffix=".lock", dir=self.tmp_path)
        lock = Path(lock_name)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            folder = lock.with_name(lock.name[: -len(".lock")])
            folder.mkdir()
            try:
                yield folder
            finally:
                _remove(folder)
                lock.unlink(missing_ok=True)  # still holding the lock: no sweep can be half-way through it
        finally:
            os.close(fd)

    def sweep(self, *, min_age_s: float = 60.0) -> list[Path]:
        """Remove the work folders under ``tmp/`` left by processes that are gone; return them.

        A folder whose ``.lock`` is free (its process died: killed, machine restarted) goes at
        once; one without a lock file (an older shoal's), or any when ``fcntl`` is missing (Windows),
        once it is :data:`STALE_UNLOCKED_S` old; a folder whose lock is held (a build under way) is
        never touched.
        """
        removed: list[Path] = []
        if not self.tmp_path.is_dir():
            return removed
        now = time.time()
        for path in sorted(self.tmp_path.iterdir()):
            age = now - _mtime(path)
            if path.name.endswith(".lock"):
                if not path.with_name(path.name[: -len(".lock")]).exists() and age > min_age_s:
                    with _held(path) as free:  # a lock file whose folder is gone (killed before mkdir)
                        if free:
                            path.unlink(missing_ok=True)
                continue
            lock = path.with_name(path.name + ".lock")
            stale = age > min_age_s if path.name.startswith("deleted-") else self._work_folder_free(path)
            if stale:
                _remove(path)
                lock.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def _work_folder_free(self, folder: Path) -> bool:
        """Whether the work folder's process is gone: its lock is free; or, without a lock file (an older
        shoal's) or without ``fcntl`` (no lock can be held), once it is :data:`STALE_UNLOCKED_S` old."""
        lock = folder.with_name(folder.name + ".lock")
        if fcntl is None or not lock.exists():
            return not folder.exists() or time.time() - _mtime(folder) > STALE_UNLOCKED_S
        with _held(lock) as free:
            return free

    def _set_aside(self, folder: Path) -> Path | None:
        """Move ``folder`` into ``tmp/`` (same disk, one rename) and return where it went."""
        if not (folder.exists() or folder.is_symlink()):
            return None
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        trash = Path(tempfile.mkdtemp(prefix=f"deleted-{folder.parent.name}-{folder.name}-", dir=self.tmp_path))
        target = trash / folder.name
        os.replace(folder, target)
        return trash

    def _discard(self, folder: Path) -> None:
        trash = self._set_aside(folder)
        if trash is not None:
            _remove(trash)

    # -- jobs (the web app's queue) -------------------------------------------------------
    def add_job(self, kind: str, target: str, *, lane: str, params: dict[str, Any] | None = None) -> Job:
        """Queue a job and return it (status ``queued``)."""
        with self._db() as con:
            cur = con.execute(
                "INSERT INTO jobs (kind, target, lane, status, params, created) VALUES (?, ?, ?, 'queued', ?, ?)",
                (kind, target, lane, json.dumps(params or {}), time.time()),
            )
            job_id = int(cur.lastrowid or 0)
        return self.get_job(job_id)

    def add_running_job(self, kind: str, target: str, *, lane: str, pid: int, params: dict[str, Any] | None = None,
                        claim: Callable[[list[Job]], dict[str, Any] | None]) -> Job | None:
        """Record a job that runs at once in process ``pid`` (a CLI training), if ``claim`` allows it.

        ``claim`` sees the running jobs inside the same write transaction and returns the job's
        first progress (what it holds, e.g. ``{"gpus": [...]}``), or None while its lane is busy;
        then nothing is recorded and None is returned. Two processes never both get a busy lane.
        """
        with self._db(write=True) as con:
            rows = con.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = 'running' ORDER BY id").fetchall()
            progress = claim([_job(r) for r in rows])
            if progress is None:
                return None
            now = time.time()
            cur = con.execute(
                "INSERT INTO jobs (kind, target, lane, status, params, progress, pid, created, started) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (kind, target, lane, json.dumps(params or {}), json.dumps(progress), pid, now, now),
            )
            job_id = int(cur.lastrowid or 0)
        return self.get_job(job_id)

    def get_job(self, job_id: int) -> Job:
        """Return job ``job_id``, or raise :class:`NotFoundError`."""
        with self._db() as con:
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
        with self._db() as con:
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
        with self._db() as con:
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
        with self._db() as con:
            con.execute(
                f"DELETE FROM jobs WHERE target = ? AND kind IN ({', '.join('?' * len(kinds))}) "
                "AND status NOT IN ('queued', 'running')",
                (target, *kinds),
            )

    def _refuse_existing(self, kind: Kind, name: str) -> None:
        if self.exists(kind, name):
            raise self._exists_error(kind, name)

    def _exists_error(self, kind: Kind, name: str) -> AlreadyExistsError:
        return AlreadyExistsError(
            f"a {kind} named {name!r} already exists in {self.home}: choose another name, "
            f"or delete it first with 'shoal {kind} delete {name}'"
        )

    def _insert(self, con: sqlite3.Connection, kind: Kind, name: str, status: str, summary: dict[str, Any]) -> None:
        """Index an entry, its folder relative to the home (raises ``sqlite3.IntegrityError`` if taken)."""
        now = time.time()
        con.execute(
            "INSERT INTO entries (kind, name, status, created, updated, path, summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, name, status, now, now, f"{kind}s/{name}", json.dumps(summary)),
        )


def _errorname(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", ""))


def _json_dict(text: Any) -> dict[str, Any]:
    """A stored JSON object; damaged text reads as empty (it is a cache: 'shoal doctor' reports it)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _plain_name(name: Any) -> bool:
    """Whether ``name`` is a single folder name (an index edited by hand may hold anything)."""
    return isinstance(name, str) and bool(_NAME_RE.match(name))


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return time.time()


@contextlib.contextmanager
def _held(lock: Path) -> Iterator[bool]:
    """Try to take ``lock`` without waiting; yield whether it was free (and hold it while the block runs).

    Without ``fcntl`` no lock can be held, so every lock reads as free: :meth:`Store._work_folder_free`
    then goes by age instead.
    """
    if fcntl is None:
        yield True
        return
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove a folder tree, or only the link when ``path`` is a symbolic link (never what it points to)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _job(row: tuple[Any, ...]) -> Job:
    id_, kind, target, lane, status, params, progress, error, pid, created, started, finished = row
    return Job(id_, kind, target, lane, status, _json_dict(params), _json_dict(progress), error, pid,
               created, started, finished)


def _wal(con: sqlite3.Connection, *, attempts: int = 600) -> None:
    """Put the index in WAL mode (once per file: it persists).

    Switching needs the file to itself and SQLite reports a busy file at once instead of waiting
    for it (two commands opening a new store together hit this), so wait here, up to ~30 s.
    """
    for _ in range(attempts):
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(0.05)
    con.execute("PRAGMA journal_mode=WAL")
