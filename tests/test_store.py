"""The store: unique names, atomic creation, status updates, SHOAL_HOME."""

from __future__ import annotations

import pytest

from shoal.errors import AlreadyExistsError, ConfigError, NotFoundError
from shoal.store import Store, default_home


def test_default_home_follows_shoal_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h"
    monkeypatch.delenv("SHOAL_HOME")
    assert default_home().name == ".shoal"


def test_staging_commits_only_on_success(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.staging("dataset", "half") as folder:
            (folder / "part").write_text("x")
            raise RuntimeError("killed while writing")
    assert not store.exists("dataset", "half")
    assert not store.folder("dataset", "half").exists()
    assert list((tmp_path / "tmp").iterdir()) == []

    with store.staging("dataset", "whole", summary={"images": 3}) as folder:
        (folder / "part").write_text("x")
    entry = store.get("dataset", "whole")
    assert entry.status == "done" and entry.summary == {"images": 3}
    assert (entry.path / "part").read_text() == "x"


def test_names_are_unique_per_kind(tmp_path):
    store = Store(tmp_path)
    store.reserve("model", "m1")
    with pytest.raises(AlreadyExistsError, match="a model named 'm1' already exists .* 'shoal model delete m1'"):
        store.reserve("model", "m1")
    store.reserve("dataset", "m1")  # another kind may share the name
    assert [e.name for e in store.list("model")] == ["m1"]


@pytest.mark.parametrize("bad", ["", "../up", "a/b", ".hidden", "x" * 101, "sp ace"])
def test_bad_names_are_refused(tmp_path, bad):
    with pytest.raises(ConfigError, match="name .* is not allowed"):
        Store(tmp_path).reserve("dataset", bad)


def test_unicode_names_are_allowed(tmp_path):
    assert Store(tmp_path).reserve("dataset", "délfines-海马").name == "délfines-海马"


def test_update_and_delete(tmp_path):
    store = Store(tmp_path)
    store.reserve("model", "m", summary={"a": 1})
    entry = store.update("model", "m", status="running", summary={"b": 2})
    assert entry.status == "running" and entry.summary == {"a": 1, "b": 2}
    with pytest.raises(ConfigError, match="status must be one of"):
        store.update("model", "m", status="sleeping")
    store.delete("model", "m")
    assert not entry.path.exists()
    with pytest.raises(NotFoundError, match=r"no model named 'm' in .* \(known: none yet\)"):
        store.get("model", "m")
