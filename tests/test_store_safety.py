"""The store keeps users' data safe: copies stay apart, names are taken once, a full disk and a
killed build leave nothing behind (issue 14, items 3, 4, 7 and 8)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shoal import datasets
from shoal.data import dataset as dataset_module
from shoal.data import decode as decode_module
from shoal.errors import AlreadyExistsError, NoSpaceError, StoreError
from shoal.store import INDEX_FORMAT, Store
from waiting import GENEROUS_S, wait_for

# The index as shoal 0.1.0 wrote it: no user_version, absolute folder paths.
_OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    kind TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL, path TEXT NOT NULL, summary TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (kind, name)
)
"""


def _old_index(home: Path, rows: list[tuple[str, str, str]]) -> None:
    """Write ``home/index.sqlite`` the way shoal 0.1.0 did: ``(kind, name, absolute path)`` rows."""
    for leftover in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        home.joinpath(leftover).unlink(missing_ok=True)
    con = sqlite3.connect(home / "index.sqlite")
    with con:
        con.execute(_OLD_SCHEMA)
        for kind, name, path in rows:
            con.execute("INSERT INTO entries VALUES (?, ?, 'done', 1.0, 1.0, ?, '{}')", (kind, name, path))
    con.close()


# -- item 3: paths relative to the home; a copied store is its own -----------------------------
def test_the_index_keeps_paths_relative_to_the_home(tmp_path):
    store = Store(tmp_path / "h")
    store.reserve("model", "m")
    con = sqlite3.connect(store.db_path)
    assert con.execute("SELECT path FROM entries").fetchall() == [("models/m",)]
    assert con.execute("PRAGMA user_version").fetchone()[0] == INDEX_FORMAT
    con.close()
    assert store.get("model", "m").path == tmp_path / "h" / "models" / "m"


def test_deleting_in_a_copied_store_leaves_the_original_alone(tmp_path):
    h1, h2 = tmp_path / "h1", tmp_path / "h2"
    store1 = Store(h1)
    with store1.staging("dataset", "x") as folder:
        (folder / "data").write_text("precious")
    store1.reserve("model", "m")
    shutil.copytree(h1, h2, symlinks=True)  # cp -a H1 H2

    store2 = Store(h2)
    assert store2.get("dataset", "x").path == h2 / "datasets" / "x"
    store2.delete("dataset", "x")
    store2.delete("model", "m")
    assert (h1 / "datasets" / "x" / "data").read_text() == "precious"
    assert (h1 / "models" / "m").is_dir()
    assert not (h2 / "datasets" / "x").exists() and not (h2 / "models" / "m").exists()
    assert store1.exists("dataset", "x") and not store2.exists("dataset", "x")


def test_a_store_written_by_shoal_0_1_0_still_loads_and_a_copy_of_it_too(tmp_path, image_folder_factory):
    h1, h2 = tmp_path / "h1", tmp_path / "h2"
    source = image_folder_factory(["a", "b"], 4, size=(12, 12))
    datasets.create(source, "old", size=8, store=Store(h1))
    _old_index(h1, [("dataset", "old", str(h1 / "datasets" / "old"))])
    shutil.copytree(h1, h2, symlinks=True)

    copied = datasets.load("old", store=Store(h2))  # the old row names h1: read as h2's own folder
    assert copied.path == h2 / "datasets" / "old"
    assert copied.images("train").shape == (6, 8, 8, 3)
    con = sqlite3.connect(h2 / "index.sqlite")
    assert con.execute("SELECT path FROM entries").fetchall() == [("datasets/old",)]  # upgraded in place
    assert con.execute("PRAGMA user_version").fetchone()[0] == INDEX_FORMAT
    con.close()
    datasets.delete("old", store=Store(h2))
    assert datasets.load("old", store=Store(h1)).images("train").shape == (6, 8, 8, 3)


def test_a_row_an_older_shoal_adds_later_is_read_inside_the_home(tmp_path):
    store = Store(tmp_path / "h2")
    store.reserve("model", "new")  # format 2 index
    con = sqlite3.connect(store.db_path)
    with con:  # what shoal 0.1.0 writes into it after the store was copied from h1
        con.execute("INSERT INTO entries VALUES ('model', 'old', 'done', 1.0, 1.0, ?, '{}')",
                    (str(tmp_path / "h1" / "models" / "old"),))
    con.close()
    (tmp_path / "h1" / "models" / "old").mkdir(parents=True)
    assert store.get("model", "old").path == tmp_path / "h2" / "models" / "old"
    store.delete("model", "old")
    assert (tmp_path / "h1" / "models" / "old").is_dir()


def test_an_index_row_pointing_outside_the_home_is_refused(tmp_path):
    store = Store(tmp_path / "h")
    store.reserve("model", "m")
    victim = tmp_path / "victim"
    victim.mkdir()
    con = sqlite3.connect(store.db_path)
    with con:
        con.execute("UPDATE entries SET path = '../victim'")
    con.close()
    with pytest.raises(StoreError, match=r"points outside .* \(\.\./victim\); it was edited by hand: set its path back to 'models/m'"):
        store.delete("model", "m")
    assert victim.is_dir()


def test_an_index_from_a_newer_shoal_is_refused_with_its_version(tmp_path):
    store = Store(tmp_path)
    store.reserve("model", "m")
    con = sqlite3.connect(store.db_path)
    con.execute(f"PRAGMA user_version = {INDEX_FORMAT + 1}")
    con.close()
    with pytest.raises(StoreError, match=f"has format {INDEX_FORMAT + 1}, written by a newer shoal.*upgrade shoal"):
        store.list()


# -- item 4: a name is taken by a unique insert before any file is touched ---------------------
def test_a_model_name_taken_meanwhile_leaves_the_winners_folder_alone(tmp_path, monkeypatch):
    store = Store(tmp_path)
    winner = store.reserve("model", "m")
    (winner.path / "state.pt").write_text("the winner's")
    # The loser checked the name before the winner took it: nothing but the insert can tell.
    monkeypatch.setattr(Store, "exists", lambda self, kind, name: False)
    with pytest.raises(AlreadyExistsError, match="a model named 'm' already exists"):
        store.reserve("model", "m")
    assert (winner.path / "state.pt").read_text() == "the winner's"


def test_a_dataset_being_built_cannot_be_built_again(tmp_path, image_folder_factory):
    store = Store(tmp_path / "h")
    source = image_folder_factory(["a", "b"], 4, size=(12, 12))
    with store.staging("dataset", "x") as building:
        (building / "part").write_text("the winner's")
        with pytest.raises(AlreadyExistsError, match=r"dataset 'x' is being built by another process \(pid \d+"):
            datasets.create(source, "x", size=8, store=store)
        with pytest.raises(AlreadyExistsError, match="dataset 'x' is being built by another process"):
            store.reserve("dataset", "x")
        assert (building / "part").read_text() == "the winner's"
    assert (store.get("dataset", "x").path / "part").read_text() == "the winner's"
    with pytest.raises(AlreadyExistsError, match="a dataset named 'x' already exists"):
        datasets.create(source, "x", size=8, store=store)


def test_a_build_reserved_by_a_killed_process_is_taken_over(tmp_path, image_folder_factory):
    store = Store(tmp_path / "h")
    source = image_folder_factory(["a", "b"], 4, size=(12, 12))
    con = sqlite3.connect(store.db_path) if store.list() == [] else None
    assert con is not None
    with con:  # a builds row whose work folder's lock nobody holds (the process was killed)
        con.execute("INSERT INTO builds VALUES ('dataset', 'x', 'dataset-x-gone', 999999, 'host', 1.0)")
    con.close()
    (store.tmp_path / "dataset-x-gone").mkdir(parents=True)
    (store.tmp_path / "dataset-x-gone.lock").write_text("")
    assert datasets.create(source, "x", size=8, store=store).count() == 8
    assert not (store.tmp_path / "dataset-x-gone").exists()



def test_a_build_left_by_a_killed_staging_does_not_block_reserving_the_name(tmp_path):
    store = Store(tmp_path / "h")
    store.list("model")  # makes the index
    con = sqlite3.connect(store.db_path)
    with con:  # a killed staging of model 'm' (a Caffe import): its row stays, its work folder's lock is free
        con.execute("INSERT INTO builds VALUES ('model', 'm', 'model-m-gone', 999999, 'host', 1.0)")
    con.close()
    (store.tmp_path / "model-m-gone").mkdir(parents=True)
    (store.tmp_path / "model-m-gone.lock").write_text("")
    assert store.reserve("model", "m", status="running").name == "m"
    con = sqlite3.connect(store.db_path)
    assert con.execute("SELECT * FROM builds").fetchall() == []  # taken over: the row is gone
    con.close()
    with store.work_folder("model-n-") as held, store._building("model", "n", held):  # a live build still refuses
        with pytest.raises(AlreadyExistsError, match=r"model 'n' is being built by another process \(pid \d+"):
            store.reserve("model", "n")


def test_without_fcntl_work_folders_are_freed_by_age_only(tmp_path, monkeypatch):
    from shoal import store as store_module

    monkeypatch.setattr(store_module, "fcntl", None)
    store = Store(tmp_path / "h")
    with store.work_folder("dataset-x-") as live:
        assert (live.parent / (live.name + ".lock")).exists()
        assert not store._work_folder_free(live)  # no lock can be held: a young folder may be a live build
        assert store.sweep(min_age_s=0) == [] and live.is_dir()
        old = time.time() - store_module.STALE_UNLOCKED_S - 60
        os.utime(live, (old, old))
        assert store._work_folder_free(live)
        assert store.sweep(min_age_s=0) == [live] and not live.exists()


def test_an_upgraded_index_has_the_jobs_table(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    _old_index(home, [])
    store = Store(home)
    assert store.list_jobs() == []
    job = store.add_job("train", "m", lane="cpu")
    assert store.get_job(job.id).status == "queued"

_BUILD = textwrap.dedent("""
    import sys
    from shoal import datasets
    try:
        datasets.create(sys.argv[1], "x", size=int(sys.argv[2]), workers=1)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
""")


def test_two_builds_of_one_name_at_once_keep_the_winners_data(shoal_home, image_folder_factory):
    source = image_folder_factory(["a", "b"], 30, size=(24, 24))
    env = {**os.environ, "SHOAL_HOME": str(shoal_home)}
    for trial in range(2):
        procs = [subprocess.Popen([sys.executable, "-c", _BUILD, str(source), str(size)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for size in (8, 16)]
        outcomes = [(p.wait(timeout=GENEROUS_S), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        won = [i for i, (rc, _) in enumerate(outcomes) if rc == 0]
        assert len(won) == 1, outcomes
        loser = outcomes[1 - won[0]][1]
        assert "Traceback" not in loser and "IntegrityError" not in loser, loser
        assert ("is being built by another process" in loser) or ("already exists" in loser), loser
        stored = datasets.load("x")
        size = (8, 16)[won[0]]
        assert stored.size == (size, size) and stored.images("train").shape[1:3] == (size, size)
        assert stored.labels("train").shape == (stored.count("train"),)
        datasets.delete("x")
    assert [p.name for p in (shoal_home / "tmp").iterdir()] == []


# -- item 7: a full disk ------------------------------------------------------------------------
def _nothing_left(store: Store, name: str) -> None:
    assert not store.exists("dataset", name)
    assert not store.folder("dataset", name).exists()
    assert [p.name for p in store.tmp_path.iterdir()] == []


def test_a_build_that_cannot_fit_is_refused_before_writing(tmp_path, image_folder_factory, monkeypatch):
    store = Store(tmp_path / "h")
    source = image_folder_factory(["a", "b"], 10, size=(12, 12))
    monkeypatch.setattr(dataset_module, "_free_bytes", lambda folder: 1000)
    written = []
    monkeypatch.setattr(decode_module, "allocate", lambda *a: written.append(a))
    monkeypatch.setattr(dataset_module, "allocate", lambda *a: written.append(a))
    with pytest.raises(NoSpaceError, match=r"^no space left on .*h: 1 MB needed to build dataset 'x', 1 MB free"):
        datasets.create(source, "x", size=8, store=store)
    assert written == []
    _nothing_left(store, "x")


def test_the_pixel_arrays_have_their_disk_blocks_reserved(tmp_path):
    # A memory-mapped write to a sparse file on a full disk is SIGBUS; reserved blocks cannot be.
    path = tmp_path / "a.npy"
    decode_module.allocate(path, (64, 64, 64, 3))
    info = os.stat(path)
    if info.st_blocks * 512 < info.st_size and not _fallocate_supported(tmp_path):
        pytest.skip("this file system cannot reserve blocks")
    assert info.st_blocks * 512 >= info.st_size


def _fallocate_supported(folder: Path) -> bool:
    with open(folder / "probe", "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, 1 << 20)
        except OSError:
            return False
    return os.stat(folder / "probe").st_blocks * 512 >= 1 << 20


def test_a_full_disk_while_building_is_one_error_and_leaves_nothing(tmp_path, image_folder_factory, monkeypatch):
    store = Store(tmp_path / "h")
    source = image_folder_factory(["a", "b"], 10, size=(12, 12))

    def full(fd, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(decode_module, "_reserve_blocks", full)
    with pytest.raises(NoSpaceError, match=r"^no space left on .*h: 1 MB needed to build dataset 'x'; free some"):
        datasets.create(source, "x", size=8, store=store)
    _nothing_left(store, "x")
    monkeypatch.undo()
    assert datasets.create(source, "x", size=8, store=store).count() == 20  # the name is free again


def test_a_full_disk_on_the_last_write_leaves_nothing(tmp_path, image_folder_factory, monkeypatch):
    store = Store(tmp_path / "h")
    source = image_folder_factory(["a", "b"], 10, size=(12, 12))
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name == "dataset.json":
            real(self, "{", encoding="utf-8")  # cut short, as a full disk does
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(NoSpaceError, match="no space left on"):
        datasets.create(source, "x", size=8, store=store)
    _nothing_left(store, "x")


def test_the_cli_says_no_space_in_one_line(shoal_home, image_folder_factory, monkeypatch):
    from shoal.cli import _register, app

    _register()
    source = image_folder_factory(["a", "b"], 10, size=(12, 12))
    monkeypatch.setattr(dataset_module, "_free_bytes", lambda folder: 0)
    result = CliRunner().invoke(app, ["dataset", "create", str(source), "--name", "x", "--size", "8"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no space left on {shoal_home}: 1 MB needed to build dataset 'x'")
    assert len(result.output.strip().splitlines()) == 1


# -- item 8: after kill -9 -----------------------------------------------------------------------
_SLOW_BUILD = textwrap.dedent("""
    import os, sys, time
    from shoal import datasets
    from shoal.data import decode

    def slow(spec, jobs):  # a worker: say who it is, then take (far) longer than the test waits
        open(os.path.join(sys.argv[2], str(os.getpid())), "w").close()
        time.sleep(3600)
        return []

    decode._decode_chunk = slow
    datasets.create(sys.argv[1], "killed", size=8, workers=2)
""")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is dead, waiting to be reaped
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="decoding workers are forked on Linux only")
def test_kill_9_of_a_build_ends_its_workers_and_the_next_build_removes_its_folder(
        shoal_home, image_folder_factory, tmp_path):
    source = image_folder_factory(["a", "b"], 30, size=(12, 12))
    pids = tmp_path / "pids"
    pids.mkdir()
    build = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, str(source), str(pids)],
                             env={**os.environ, "SHOAL_HOME": str(shoal_home)})
    try:
        workers = wait_for("two decoding workers", lambda: [int(p.name) for p in pids.iterdir()][:2]
                           if len(list(pids.iterdir())) >= 2 else None)
        os.kill(build.pid, signal.SIGKILL)
        build.wait(timeout=GENEROUS_S)
        wait_for("the workers to die with their parent", lambda: all(_gone(p) for p in workers))
    finally:
        build.kill()
        for p in pids.iterdir():
            if not _gone(int(p.name)):
                os.kill(int(p.name), signal.SIGKILL)
    left = [p for p in (shoal_home / "tmp").iterdir() if p.is_dir()]
    assert [p.name.startswith("dataset-killed-") for p in left] == [True]

    # The killed build left its name reserved and its folder: the next build takes both over.
    assert datasets.create(source, "killed", size=8).count() == 60
    assert [p.name for p in (shoal_home / "tmp").iterdir()] == []


def test_sweep_removes_only_what_no_live_process_holds(tmp_path):
    store = Store(tmp_path / "h")
    tmp = store.tmp_path
    tmp.mkdir(parents=True)
    (tmp / "dataset-dead-1").mkdir()
    (tmp / "dataset-dead-1" / "train_images.npy").write_bytes(b"x" * 100)
    (tmp / "dataset-dead-1.lock").write_text("")  # its lock file, no one holds it
    (tmp / "build-old-2").mkdir()  # an older shoal's, without a lock: removed once old
    (tmp / "build-young-3").mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(tmp / "build-old-2", (two_hours_ago, two_hours_ago))
    with store.work_folder("dataset-live-") as live:
        (live / "part").write_text("in progress")
        removed = store.sweep()
        assert sorted(p.name for p in removed) == ["build-old-2", "dataset-dead-1"]
        assert (live / "part").read_text() == "in progress"
        assert sorted(p.name for p in tmp.iterdir()) == ["build-young-3", live.name, live.name + ".lock"]
    assert sorted(p.name for p in tmp.iterdir()) == ["build-young-3"]


def test_a_stored_array_cut_short_is_one_error_naming_the_fix(tiny_dataset):
    path = tiny_dataset.path / "train_images.npy"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(Exception) as caught:
        datasets.load("tiny").images("train")
    assert str(caught.value).startswith("dataset 'tiny' is damaged (train_images.npy cannot be used:")
    assert str(caught.value).endswith("delete it with 'shoal dataset delete tiny' and build it again")
    np.save(tiny_dataset.path / "val_labels.npy", np.array([0, 1], dtype=np.int64))
    with pytest.raises(Exception, match=r"val_labels.npy cannot be used: it holds int64 \(2,\), not 9 class"):
        datasets.load("tiny").labels("val")
