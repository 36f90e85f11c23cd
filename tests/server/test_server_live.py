"""Live views (issue 12): the event streams, a run's log, the machine, and the web app's fixes around them.

Model folders are written by hand (as a run leaves them), so nothing here trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shoal.models import ModelFolder
from shoal.server import Settings, create_app, monitor
from shoal.store import Store
from waiting import GENEROUS_S

LOCAL = "http://127.0.0.1"
CSRF = {"X-Shoal-CSRF": "1"}

EVENTS = [{"type": "prepare", "message": "building lenet"},
          {"type": "start", "epoch": 0, "epochs": 2, "device": "cpu", "bf16": False},
          {"type": "iteration", "epoch": 0.5, "train_loss": 1.5, "lr": 0.1, "elapsed_s": 1.0},
          {"type": "epoch", "epoch": 1, "train_loss": 1.2, "val_loss": 1.1, "val_accuracy": 0.5, "elapsed_s": 2.0},
          {"type": "epoch", "epoch": 2, "train_loss": 0.9, "val_loss": 0.8, "val_accuracy": 0.75, "elapsed_s": 4.0},
          {"type": "done", "best_epoch": 2}]


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture()
def client(home: Path, tmp_path: Path) -> TestClient:
    roots = tmp_path / "allowed" / "photos"
    (roots / "cats").mkdir(parents=True)
    settings = Settings(home=home, roots=(roots,), run_jobs=False)
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        yield c


def a_model(home: Path, name: str = "m", *, status: str = "done", events: list[dict] = EVENTS) -> ModelFolder:
    store = Store(home)
    store.reserve("model", name, status=status, summary={"dataset": "ds"})
    folder = ModelFolder(store.folder("model", name))
    folder.write_config({"dataset": "ds", "network": "lenet", "epochs": 2})
    folder.metrics_path.write_text("".join(json.dumps({"time": 1.0 + i, **e}) + "\n" for i, e in enumerate(events)))
    return folder


def parse(body: str) -> list[tuple[str | None, dict]]:
    """The (id, data) pairs of a text/event-stream body."""
    out = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            out.append((fields.get("id"), json.loads(fields["data"])))
    return out


def test_a_model_stream_sends_every_event_with_its_number_then_the_status_and_ends(client: TestClient, home: Path) -> None:
    a_model(home)
    answer = client.get("/api/models/m/stream")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    assert answer.text.startswith("retry: ")
    sent = parse(answer.text)
    assert [i for i, _ in sent[:-1]] == ["1", "2", "3", "4", "5", "6"]
    assert [e["type"] for _, e in sent[:-1]] == [e["type"] for e in EVENTS]
    assert sent[-1] == (None, {"type": "status", "status": "done", "job": None, "bundle": False, "resumable": False})


def test_a_dropped_stream_resumes_after_the_last_event_id(client: TestClient, home: Path) -> None:
    a_model(home)
    again = parse(client.get("/api/models/m/stream", headers={"Last-Event-ID": "4"}).text)
    assert [i for i, _ in again] == ["5", "6", None]
    assert [e["type"] for _, e in again] == ["epoch", "done", "status"]
    # Last-Event-ID wins over ?after (the browser reconnects to the same address with the header).
    assert [i for i, _ in parse(client.get("/api/models/m/stream?after=1", headers={"Last-Event-ID": "6"}).text)] == [None]
    assert [i for i, _ in parse(client.get("/api/models/m/stream?after=5").text)] == ["6", None]
    assert client.get("/api/models/nope/stream").status_code == 404


def test_a_running_model_streams_events_as_the_run_writes_them(client: TestClient, home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of the CLI (no job): the stream follows metrics.jsonl while its process lives.

    The stream ends on a condition, not a clock: once the look after the one that wrote the fourth
    event has run (the model stays "running", so nothing else would end it before STREAM_S)."""
    import os

    folder = a_model(home, "live", status="running", events=EVENTS[:3])
    Store(home).update("model", "live", summary={"pid": os.getpid()})  # this process "runs" it
    monkeypatch.setattr(monitor, "STREAM_S", GENEROUS_S)  # only turns a hang into a failure
    monkeypatch.setattr(monitor, "TICK_S", 0.05)
    original = monitor._Tail.read
    original_settled = monitor.settled
    looks = []

    def read_and_grow(self: monitor._Tail) -> list[dict]:
        found = original(self)
        looks.append(len(found))
        if len(looks) == 1:  # after the first look, the run writes one more event
            with folder.metrics_path.open("a") as f:
                f.write(json.dumps({"time": 9.0, **EVENTS[3]}) + "\n")
        return found

    def settled_after_the_second_look(state: dict) -> bool:
        return original_settled(state) or len(looks) >= 2

    monkeypatch.setattr(monitor, "settled", settled_after_the_second_look)
    monkeypatch.setattr(monitor._Tail, "read", read_and_grow)
    sent = parse(client.get("/api/models/live/stream").text)
    ids = [i for i, _ in sent if i is not None]
    assert looks == [3, 4]  # the fourth was written after the first look, read by the second
    assert ids == ["1", "2", "3", "4"]  # the fourth arrived while the stream was open
    assert [e["status"] for _, e in sent if e["type"] == "status"] == ["running"]


def test_the_jobs_stream_sends_a_snapshot_then_only_changes(client: TestClient, home: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor, "STREAM_S", 0.3)
    monkeypatch.setattr(monitor, "TICK_S", 0.05)
    a_model(home)
    answer = client.get("/api/jobs/stream")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    sent = parse(answer.text)
    assert len(sent) == 1  # nothing changed while it was open
    digest, snapshot = sent[0]
    assert snapshot["type"] == "jobs" and [m["name"] for m in snapshot["models"]] == ["m"]
    assert snapshot["jobs"] == [] and snapshot["datasets"] == []
    # A reconnect that has the latest snapshot gets nothing until something changes.
    assert parse(client.get("/api/jobs/stream", headers={"Last-Event-ID": digest}).text) == []
    Store(home).add_job("train", "queued-one", lane="cpu", params={"config": {"dataset": "ds"}})
    changed = parse(client.get("/api/jobs/stream", headers={"Last-Event-ID": digest}).text)
    assert len(changed) == 1 and [j["target"] for j in changed[0][1]["jobs"]] == ["queued-one"]


def test_the_log_is_read_from_an_offset_or_its_tail(client: TestClient, home: Path) -> None:
    folder = a_model(home)
    folder.log_path.write_text("line one\nline two\nline three\n")
    whole = client.get("/api/models/m/log").json()
    assert whole == {"text": "line one\nline two\nline three\n", "offset": 0, "next": 29, "size": 29}
    with folder.log_path.open("a") as f:
        f.write("line four\n")
    more = client.get("/api/models/m/log", params={"offset": whole["next"]}).json()
    assert more["text"] == "line four\n" and more["next"] == more["size"] == 39
    assert client.get("/api/models/m/log", params={"tail": 12}).json()["text"] == "line four\n"  # whole lines
    assert client.get("/api/models/m/log", params={"offset": 0, "tail": 5}).status_code == 400
    assert client.get("/api/models/nope/log").status_code == 404
    Store(home).add_job("train", "waiting", lane="cpu", params={"config": {"dataset": "ds"}})
    assert client.get("/api/models/waiting/log").json() == {"text": "", "offset": 0, "next": 0, "size": 0}


def test_a_run_writes_its_log_in_the_model_folder(tmp_path: Path) -> None:
    """The library's emitter (CLI and web runs alike) writes a line per event."""
    from shoal.training.run import Emitter

    folder = ModelFolder(tmp_path)
    emit = Emitter(folder.metrics_path, None, append=False, log=folder.log_path)
    emit({"type": "prepare", "message": "building lenet"})
    emit({"type": "iteration", "epoch": 0.5, "train_loss": 0.00001582, "lr": 0.1})
    lines = folder.log_path.read_text().splitlines()
    assert lines[0].endswith("  building lenet")
    assert "iteration" in lines[1] and "train_loss=1.582e-05" in lines[1] and "lr=0.1" in lines[1]
    assert len(folder.events()) == 2


def test_system_reports_the_machine_without_importing_torch(client: TestClient) -> None:
    import sys

    had_torch = "torch" in sys.modules
    info = client.get("/api/system").json()
    assert info["cpu"]["cores"] >= 1 and info["memory"]["total"] > 0
    assert info["disk"]["total"] > 0 and info["versions"]["shoal"]
    assert info["default_device"] in ("cpu", "cuda", "mps") and isinstance(info["gpus"], list)
    assert info["jobs"] == []
    assert ("torch" in sys.modules) == had_torch


def test_eta_from_progress() -> None:
    from shoal.store import Job

    job = Job(id=1, kind="train", target="m", lane="cpu", status="running", params={},
              progress={"epoch": 2, "epochs": 8}, error=None, pid=None, created=0.0, started=100.0, finished=None)
    assert monitor.eta_s(job, now=160.0) == pytest.approx(180.0)  # a quarter in 60 s: three quarters left
    assert monitor.eta_s(Job(**{**job.__dict__, "progress": {}}), now=160.0) is None
    assert monitor.eta_s(Job(**{**job.__dict__, "status": "queued"}), now=160.0) is None


def test_eta_of_a_resumed_training_counts_from_its_first_epoch() -> None:
    from shoal.store import Job

    job = Job(id=1, kind="resume", target="m", lane="cpu", status="running", params={},
              progress={"epoch": 12, "epochs": 20, "first_epoch": 10}, error=None, pid=None, created=0.0,
              started=100.0, finished=None)
    assert monitor.eta_s(job, now=160.0) == pytest.approx(240.0)  # 2 of its 10 epochs in 60 s: 8 left


def test_the_worker_progress_forgets_an_earlier_stage_at_the_start(tmp_path: Path) -> None:
    from shoal.server.worker import _Progress

    store = Store(tmp_path / "home")
    job = store.add_job("resume", "m", lane="cpu", params={})
    progress = _Progress(store, job)
    progress.event({"type": "features", "done": 5, "total": 5})
    assert store.get_job(job.id).progress["total_steps"] == 5
    progress.event({"type": "start", "epoch": 10, "epochs": 20, "device": "cpu", "bf16": False})
    progress.event({"type": "epoch", "epoch": 11, "train_loss": 0.5})
    p = store.get_job(job.id).progress
    assert p["done_steps"] is None and p["total_steps"] is None and p["stage"] == "training"
    assert (p["epoch"], p["epochs"], p["first_epoch"], p["device"]) == (11, 20, 10, "cpu")


def test_a_training_aborted_while_queued_stays_listed_and_can_start(client: TestClient, home: Path) -> None:
    store = Store(home)
    job = store.add_job("train", "waiting", lane="cpu", params={"config": {"dataset": "ds", "network": "lenet"}})
    assert client.post("/api/models/waiting/abort", headers=CSRF).status_code == 200
    listed = {m["name"]: m["status"] for m in client.get("/api/models").json()}
    assert listed == {"waiting": "aborted"}
    model = client.get("/api/models/waiting").json()
    assert model["can_resume"] is True
    again = client.post("/api/models/waiting/resume", headers=CSRF)
    assert again.status_code == 202
    assert again.json()["job"]["status"] == "queued" and again.json()["job"]["id"] != job.id
    assert store.get_job(again.json()["job"]["id"]).params == job.params


def test_folder_suggestions_above_the_root_answer_the_root(client: TestClient, tmp_path: Path) -> None:
    root = tmp_path / "allowed" / "photos"
    assert client.get("/api/folders", params={"path": str(tmp_path)}).json()["folders"] == [str(root)]
    assert client.get("/api/folders", params={"path": str(tmp_path / "allowed")}).json()["folders"] == [str(root)]
    assert client.get("/api/folders", params={"path": str(root)}).json()["folders"] == [str(root / "cats")]
    assert client.get("/api/folders", params={"path": str(tmp_path / "elsewhere")}).status_code == 400


def test_cloning_a_dataset_built_from_an_upload_asks_for_the_zip_again(client: TestClient, home: Path,
                                                                      image_folder_factory) -> None:
    from shoal import datasets

    store = Store(home)
    folder = image_folder_factory(["a", "b"], 4, size=(8, 8), name="uploads-copy")
    datasets.create(folder, "zipped", store=store, size=8, workers=1)
    meta_path = store.folder("dataset", "zipped") / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["source"] = str(home / "uploads" / "tmpab12" / "x")  # where the web app extracted the zip (gone now)
    meta_path.write_text(json.dumps(meta))
    page = client.get("/datasets/new", params={"clone": "zipped"}, headers={"Accept": "text/html"})
    assert page.status_code == 200
    folder_input = page.text.split('id="f-folder"')[1].split(">")[0]
    assert 'value=""' in folder_input
    assert "was built from an uploaded zip" in page.text


def test_shoal_serve_serves_https_with_a_certificate_and_its_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The camera needs a secure origin from another device: --certfile/--keyfile go to uvicorn, both or neither."""
    import uvicorn
    from typer.testing import CliRunner

    from shoal.cli import _register, app

    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SHOAL_TOKEN", raising=False)
    ran: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **kwargs: ran.append(kwargs))
    _register()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("certificate"), key.write_text("key")
    def flat(result) -> str:  # the error box's borders and line breaks away
        return " ".join(result.output.replace("│", " ").split())

    only_cert = CliRunner().invoke(app, ["serve", "--certfile", str(cert)], terminal_width=300)
    assert only_cert.exit_code == 2 and "give --certfile and --keyfile together" in flat(only_cert)
    missing = CliRunner().invoke(app, ["serve", "--certfile", str(cert), "--keyfile", str(tmp_path / "nope.pem")],
                                 terminal_width=300)
    assert missing.exit_code == 2 and "is not a file" in flat(missing) and ran == []
    served = CliRunner().invoke(app, ["serve", "--certfile", str(cert), "--keyfile", str(key), "--port", "5443"])
    assert served.exit_code == 0, served.output
    assert "at https://localhost:5443/" in served.output
    assert ran[-1]["ssl_certfile"] == str(cert) and ran[-1]["ssl_keyfile"] == str(key)
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0 and "ssl_certfile" not in ran[-1]
