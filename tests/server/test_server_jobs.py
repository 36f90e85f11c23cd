"""The job runner with real worker processes: builds and trainings outside the request path.

One training runs per device at a time and the rest wait in order; abort, a server restart
(running jobs become interrupted) and resume; failures end as ``failed`` with their message.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import shoal
from shoal.server import Settings, create_app
from shoal.store import Store
from ranks import process_of_rank
from waiting import wait_for

LOCAL = "http://127.0.0.1"  # the server answers to loopback names only (TestClient's default is 'testserver')

CSRF = {"X-Shoal-CSRF": "1"}
pytestmark = pytest.mark.slow


@pytest.fixture()
def settings(tmp_path: Path, image_folder_factory) -> Settings:
    roots = tmp_path / "allowed"
    image_folder_factory(["circle", "square", "triangle"], 10, size=(16, 16), name="allowed/shapes")
    image_folder_factory(["only"], 5, size=(16, 16), name="allowed/lonely")
    return Settings(home=tmp_path / "home", roots=(roots,), poll_s=0.1)


def status_of(c: TestClient, kind: str, name: str) -> str:
    return c.get(f"/api/{kind}/{name}").json()["status"]


def finished(c: TestClient, kind: str, name: str) -> str | None:
    status = status_of(c, kind, name)
    return None if status in ("queued", "running") else status


def ended_job(c: TestClient, kind: str, name: str) -> str | None:
    """The status of the latest job of ``name`` once it has ended (its worker is done), else None."""
    status = c.get(f"/api/{kind}/{name}").json()["job"]["status"]
    return None if status in ("queued", "running") else status


def test_a_dataset_is_built_and_a_model_trained_by_workers(settings: Settings, tmp_path: Path) -> None:
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        answer = c.post("/api/datasets", json={"name": "shapes", "folder": "shapes", "options": {"size": 16}},
                        headers=CSRF)
        assert answer.status_code == 202
        assert wait_for("the build", lambda: finished(c, "datasets", "shapes")) == "done"
        ds = c.get("/api/datasets/shapes").json()
        assert ds["classes"] == ["circle", "square", "triangle"] and ds["total"] == 30
        # The dataset shows 'done' once stored; its job ends after the worker has cleaned up.
        assert wait_for("the build's job to end", lambda: ended_job(c, "datasets", "shapes")) == "done"
        assert c.get("/api/datasets/shapes").json()["job"]["progress"] == {"done": 30, "total": 30}

        answer = c.post("/api/models", headers=CSRF, json={
            "dataset": "shapes", "network": "lenet", "name": "tiny", "options": {"epochs": 3, "batch_size": 8}})
        assert answer.status_code == 202
        assert wait_for("the training", lambda: finished(c, "models", "tiny")) == "done"
        # Like the build's, the training's job ends after the model is stored.
        assert wait_for("the training's job to end", lambda: ended_job(c, "models", "tiny")) == "done"
        model = c.get("/api/models/tiny").json()
        assert [h["epoch"] for h in model["history"]] == [1, 2, 3]
        assert model["bundle"] and model["job"]["status"] == "done" and model["error"] is None
        events = c.get("/api/models/tiny/events").json()
        kinds = [e["type"] for e in events["events"]]
        assert set(kinds[:kinds.index("start")]) <= {"prepare"}  # what it did before starting, then the run
        assert kinds.count("epoch") == 3 and kinds[-1] == "done"
        assert c.get("/api/models/tiny/events", params={"after": events["next"]}).json()["events"] == []
        bundle = tmp_path / "tiny.shoal"
        bundle.write_bytes(c.get("/api/models/tiny/download").content)
        assert shoal.load(bundle).labels == ["circle", "square", "triangle"]
        # The worker wrote into the same store the CLI uses.
        assert Store(settings.home).get("model", "tiny").status == "done"
        # Fewer epochs than it trained: refused at once, and the finished model stays as it was.
        fewer = c.post("/api/models/tiny/resume", json={"epochs": 2}, headers=CSRF)
        assert fewer.status_code == 409, fewer.text
        assert "has trained 3 epochs; epochs is the total" in fewer.json()["detail"]
        assert c.get("/api/models/tiny").json()["status"] == "done"

        # A trained model can start another (DIGITS' "previous networks"). With the form's defaults its backbone
        # stays frozen and the head is fitted: the form sends no loop options (they are off), only these.
        answer = c.post("/api/models", headers=CSRF, json={
            "dataset": "shapes", "previous": "tiny", "name": "tiny-more",
            "options": {"batch_size": 8, "flip": False, "color_jitter": 0, "mean": "auto", "device": "auto"}})
        assert answer.status_code == 202, answer.text
        assert wait_for("the continued training", lambda: finished(c, "models", "tiny-more")) == "done"
        more = c.get("/api/models/tiny-more").json()
        config = more["config"]
        assert config["network"] == "lenet" and config["pretrained"].endswith("tiny/best.safetensors")
        assert config["head"] == "fit" and config["epochs"] is None
        assert more["fit"]["folds"] >= 2 and more["fit"]["strength"] in [p["C"] for p in more["fit"]["curve"]]
        assert [h["epoch"] for h in more["history"]] == [1] and more["bundle"] and more["can_resume"] is False
        kinds = [e["type"] for e in c.get("/api/models/tiny-more/events").json()["events"]]
        assert "fit" in kinds and "iteration" not in kinds and kinds[-1] == "done"


def test_a_dataset_is_built_from_an_uploaded_zip(settings: Settings, tmp_path: Path) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted((tmp_path / "allowed" / "shapes").rglob("*.png")):
            z.write(path, f"photos/{path.parent.name}/{path.name}")
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        answer = c.post("/api/datasets/upload", data={"name": "zipped", "options": '{"size": 16, "val_pct": 20}'},
                        files={"file": ("photos.zip", buffer.getvalue())}, headers=CSRF)
        assert answer.status_code == 202, answer.text
        assert wait_for("the build", lambda: finished(c, "datasets", "zipped")) == "done"
        ds = c.get("/api/datasets/zipped").json()
        assert ds["classes"] == ["circle", "square", "triangle"] and ds["counts"]["val"] == 6
        # The dataset shows 'done' once stored; its job ends after the worker has cleaned up.
        assert wait_for("the build's job to end", lambda: ended_job(c, "datasets", "zipped")) == "done"
    assert list((settings.home / "uploads").iterdir()) == []  # the extracted files are gone


def test_failures_end_as_failed_with_their_message(settings: Settings) -> None:
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        c.post("/api/datasets", json={"name": "lonely", "folder": "lonely"}, headers=CSRF)
        assert wait_for("the build", lambda: finished(c, "datasets", "lonely")) == "failed"
        error = c.get("/api/datasets/lonely").json()["error"]
        assert "1 class" in error and "need at least 2" in error
        assert [d["status"] for d in c.get("/api/datasets").json()] == ["failed"]

        c.post("/api/datasets", json={"name": "shapes", "folder": "shapes", "options": {"size": 16}}, headers=CSRF)
        wait_for("the build", lambda: finished(c, "datasets", "shapes"))
        c.post("/api/models", json={"dataset": "shapes", "network": "lenet", "name": "crop",
                                    "options": {"crop": 15, "epochs": 1}}, headers=CSRF)
        assert c.post("/api/models", json={"dataset": "shapes", "network": "lenet", "name": "huge",
                                           "options": {"crop": 99}}, headers=CSRF).status_code == 202
        assert wait_for("the bad training", lambda: finished(c, "models", "huge")) == "failed"
        model = c.get("/api/models/huge").json()
        assert model["error"] == ("crop 99 is larger than the dataset's images (16x16); use --crop 16 or less, or "
                                  "rebuild the dataset larger")
        assert model["can_resume"] is False
        assert finished(c, "models", "crop") == "done"  # queued before it, unaffected


def test_one_training_per_device_abort_restart_and_resume(settings: Settings) -> None:
    store = Store(settings.home)
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        c.post("/api/datasets", json={"name": "shapes", "folder": "shapes", "options": {"size": 16}}, headers=CSRF)
        wait_for("the build", lambda: finished(c, "datasets", "shapes"))
        answer = c.post("/api/models", headers=CSRF, json={
            "dataset": "shapes", "network": "lenet", "name": "long",
            "options": {"lr": [0.01, 0.02], "epochs": 20000, "batch_size": 8, "snapshot_every": 0}})
        first, second = (m["name"] for m in answer.json()["models"])

        def one_at_a_time_and(condition: Callable[[], bool]) -> Callable[[], bool]:
            def check() -> bool:
                running = [m["name"] for m in c.get("/api/models").json() if m["status"] == "running"]
                assert len(running) <= 1, f"two trainings ran at once on the cpu: {running}"
                return condition()
            return check

        def has_epochs(name: str) -> Callable[[], bool]:
            return lambda: status_of(c, "models", name) == "running" and bool(c.get(f"/api/models/{name}").json()["history"])

        wait_for(f"{first} to train", one_at_a_time_and(has_epochs(first)))
        assert status_of(c, "models", second) == "queued"
        assert c.get(f"/api/models/{second}").json()["job"]["queue_position"] == 1
        aborted = c.post(f"/api/models/{first}/abort", headers=CSRF)
        assert aborted.status_code == 200
        wait_for(f"{first} to stop", one_at_a_time_and(lambda: status_of(c, "models", first) == "aborted"))
        wait_for(f"{second} to train", one_at_a_time_and(has_epochs(second)))
        assert c.get(f"/api/models/{first}").json()["can_resume"] is True
    # The server stopped while the second trained: it saved its last epoch and shows as interrupted.
    assert store.get("model", second).status == "interrupted"
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        model = c.get(f"/api/models/{second}").json()
        assert model["status"] == "interrupted" and model["can_resume"] is True
        for name in (second, first):
            done = len(c.get(f"/api/models/{name}").json()["history"])
            answer = c.post(f"/api/models/{name}/resume", json={"epochs": done + 1}, headers=CSRF)
            assert answer.status_code == 202, answer.text
        for name in (second, first):
            assert wait_for(f"{name} to finish", lambda name=name: finished(c, "models", name)) == "done"
            model = c.get(f"/api/models/{name}").json()
            epochs = [h["epoch"] for h in model["history"]]
            assert epochs == list(range(1, len(epochs) + 1)) and model["bundle"]


def test_a_training_in_two_processes_from_the_web_app(settings: Settings) -> None:
    """processes=2 runs 'shoal train --nproc 2' in the worker: the job follows rank 0's epochs, the web app's
    abort stops both processes, the model resumes in one; a killed process leaves the model interrupted."""
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        c.post("/api/datasets", json={"name": "shapes", "folder": "shapes", "options": {"size": 16}}, headers=CSRF)
        wait_for("the build", lambda: finished(c, "datasets", "shapes"))
        uneven = c.post("/api/models", headers=CSRF, json={
            "dataset": "shapes", "network": "lenet", "processes": 2, "options": {"batch_size": 7}})
        assert uneven.status_code == 400 and "must split evenly over 2 processes" in uneven.json()["detail"], uneven.text
        answer = c.post("/api/models", headers=CSRF, json={
            "dataset": "shapes", "network": "lenet", "name": "pair", "processes": 2,
            "options": {"epochs": 100000, "batch_size": 8, "snapshot_every": 0, "device": "cpu"}})
        assert answer.status_code == 202, answer.text
        job = c.get("/api/models/pair").json()["job"]
        assert job["lane"] == "cpu"
        wait_for("the job to follow rank 0's epochs", lambda: (
            c.get("/api/models/pair").json()["job"]["progress"].get("epoch", 0) >= 1))
        start = next(e for e in c.get("/api/models/pair/events").json()["events"] if e["type"] == "start")
        assert start["world_size"] == 2
        assert c.post("/api/models/pair/abort", headers=CSRF).status_code == 200
        assert wait_for("both processes to stop", lambda: ended_job(c, "models", "pair")) == "aborted"
        assert status_of(c, "models", "pair") == "aborted"

        done = len(c.get("/api/models/pair").json()["history"])
        uneven = c.post("/api/models/pair/resume", json={"epochs": done + 1, "processes": 3}, headers=CSRF)
        assert uneven.status_code == 400 and "must split evenly over 3 processes" in uneven.json()["detail"], uneven.text
        assert status_of(c, "models", "pair") == "aborted"  # refused at submit: nothing queued
        answer = c.post("/api/models/pair/resume", json={"epochs": done + 1, "processes": 1}, headers=CSRF)
        assert answer.status_code == 202, answer.text
        assert wait_for("the resumed run", lambda: finished(c, "models", "pair")) == "done"
        model = c.get("/api/models/pair").json()
        assert [h["epoch"] for h in model["history"]] == list(range(1, done + 2)) and model["bundle"]
        starts = [e for e in c.get("/api/models/pair/events").json()["events"] if e["type"] == "start"]
        assert [e["world_size"] for e in starts] == [2, 1]

        c.post("/api/models", headers=CSRF, json={
            "dataset": "shapes", "network": "lenet", "name": "cut", "processes": 2,
            "options": {"epochs": 100000, "batch_size": 8, "snapshot_every": 0, "device": "cpu"}})
        wait_for("cut's first epoch", lambda: bool(c.get("/api/models/cut").json()["history"]))
        worker = c.get("/api/models/cut").json()["job"]["pid"]
        os.kill(wait_for("rank 1's process", lambda: process_of_rank(worker, 1)), signal.SIGKILL)
        assert wait_for("the run to end", lambda: ended_job(c, "models", "cut")) == "interrupted"
        model = c.get("/api/models/cut").json()
        assert model["status"] == "interrupted" and model["can_resume"] is True
        assert "rank 1 was killed (SIGKILL)" in model["job"]["error"]
