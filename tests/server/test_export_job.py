"""A download of an epoch other than the best's bundle: the export is a queued job with progress, then the file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import shoal
from inference_fixtures import ToyModel
from shoal import models
from shoal.server import Settings, create_app
from shoal.store import Store
from waiting import wait_for

CSRF = {"X-Shoal-CSRF": "1"}
LOCAL = "http://127.0.0.1"


def _home(rgb: ToyModel, tmp_path: Path) -> Path:
    """A copy of the toy model's store with no download written yet."""
    home = tmp_path / "home"
    shutil.copytree(rgb.home, home, symlinks=True)
    shutil.rmtree(models.ModelFolder.of(rgb.name, store=Store(home)).downloads_path, ignore_errors=True)
    return home


@pytest.fixture()
def idle(rgb: ToyModel, tmp_path: Path) -> Iterator[TestClient]:
    """The app without its job runner: jobs are queued, never started."""
    with TestClient(create_app(Settings(home=_home(rgb, tmp_path), run_jobs=False)), base_url=LOCAL) as c:
        yield c


def test_the_best_bundle_is_ready_at_once(idle: TestClient, rgb: ToyModel) -> None:
    answer = idle.post(f"/api/models/{rgb.name}/export", headers=CSRF)
    assert answer.status_code == 200
    assert answer.json() == {"job": None, "name": rgb.name, "epoch": "best",
                             "url": f"/api/models/{rgb.name}/download?epoch=best"}
    assert idle.get(answer.json()["url"]).status_code == 200


def test_an_epoch_is_exported_by_one_queued_job(idle: TestClient, rgb: ToyModel) -> None:
    first = idle.post(f"/api/models/{rgb.name}/export", params={"epoch": "last"}, headers=CSRF)
    assert first.status_code == 202
    job = first.json()["job"]
    assert (job["kind"], job["target"], job["lane"], job["status"]) == ("export", rgb.name, "export", "queued")
    assert first.json()["url"] == f"/api/models/{rgb.name}/download?epoch=last"
    again = idle.post(f"/api/models/{rgb.name}/export", params={"epoch": "LAST "}, headers=CSRF)
    assert again.status_code == 202 and again.json()["job"]["id"] == job["id"]
    store = Store(idle.app.state.settings.home)
    assert [j.id for j in store.list_jobs(kind="export")] == [job["id"]]
    early = idle.get(first.json()["url"])
    assert early.status_code == 409
    assert early.json()["detail"] == (f"model {rgb.name!r} at epoch 'last' is not exported yet: POST /api/models/"
                                      f"{rgb.name}/export?epoch=last queues its export (the model page's Download "
                                      "button does), then download it")
    missing = idle.post(f"/api/models/{rgb.name}/export", params={"epoch": "999"}, headers=CSRF)
    assert missing.status_code == 404 and "has no snapshot of epoch '999'" in missing.json()["detail"]


@pytest.mark.slow
def test_the_export_job_runs_and_the_file_downloads(rgb: ToyModel, tmp_path: Path) -> None:
    home = _home(rgb, tmp_path)
    with TestClient(create_app(Settings(home=home, poll_s=0.2)), base_url=LOCAL) as c:
        queued = c.post(f"/api/models/{rgb.name}/export", params={"epoch": "last"}, headers=CSRF)
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["job"]["id"]
        job = wait_for("the export job", lambda: (j := c.get(f"/api/jobs/{job_id}").json())["status"]
                       not in ("queued", "running") and j)
        assert job["status"] == "done", job
        assert job["progress"]["stage"] == "written" and job["progress"]["file"] == f"{rgb.name}-last.shoal"
        answer = c.get(queued.json()["url"])
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-disposition"] == f'attachment; filename="{rgb.name}-last.shoal"'
        again = c.post(f"/api/models/{rgb.name}/export", params={"epoch": "last"}, headers=CSRF)
        assert again.status_code == 200 and again.json()["job"] is None  # written: no second export
    path = tmp_path / "last.shoal"
    path.write_bytes(answer.content)
    model = shoal.load(path)
    last = models.ModelFolder.of(rgb.name, store=Store(home)).history()[-1]["epoch"]
    assert model.manifest["epoch"] == last and model.labels == list(rgb.labels)


def test_a_snapshot_saved_again_is_exported_again(idle: TestClient, rgb: ToyModel) -> None:
    folder = models.ModelFolder.of(rgb.name, store=Store(idle.app.state.settings.home))
    snapshot = folder.snapshot(5)  # the toy model keeps epoch 5 (a snapshot every 5 epochs)
    out = folder.downloads_path / f"{rgb.name}-epoch-5.shoal"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(b"an earlier export")
    os.utime(out, (snapshot.stat().st_mtime + 10,) * 2)
    ready = idle.post(f"/api/models/{rgb.name}/export", params={"epoch": "5"}, headers=CSRF)
    assert ready.status_code == 200 and ready.json()["job"] is None
    # A resumed run trained epoch 5 again after a kill: the old file is not served, the epoch is exported again.
    os.utime(snapshot, (out.stat().st_mtime + 10,) * 2)
    again = idle.post(f"/api/models/{rgb.name}/export", params={"epoch": "5"}, headers=CSRF)
    assert again.status_code == 202 and again.json()["job"]["kind"] == "export"
