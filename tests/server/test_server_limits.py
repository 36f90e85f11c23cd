"""Issue 14, items 5, 10 (web), 11 and 12: bounded reads, 4xx instead of 500, parallel downloads, smaller holes.

Each test replays what the attack run did: a huge JSON body sent without the CSRF header, a
list file that is a pipe or a device, ``previous_epoch=²``, ``/api/jobs/10^22``, zips whose
headers lie, six downloads of one bundle at once, ``?token=`` on ``//evil.example``, an image
linked from outside the roots, a dataset or model deleted while it trains.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from inference_fixtures import ToyModel
from shoal import datasets, models
from shoal.cli import _register, app
from shoal.errors import ConfigError, DatasetError, TrainingError
from shoal.server import Settings, create_app, services
from shoal.store import Store, check_name
from waiting import GENEROUS_S, wait_for

CSRF = {"X-Shoal-CSRF": "1"}
LOCAL = "http://127.0.0.1"
_register()


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture()
def client(tmp_path: Path, roots: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(home=tmp_path / "home", roots=(roots,), run_jobs=False)), base_url=LOCAL) as c:
        yield c


# -- item 5: bodies are bounded, and refused before they are read ------------------------------------
async def _asgi(application, method: str, path: str, headers: dict[str, str], body_size: int) -> tuple[int, int]:
    """Send a request straight to the ASGI app; return the status and how many body bytes the app asked for."""
    asked = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal asked
        asked += 1 << 20
        return {"type": "http.request", "body": b"x" * (1 << 20), "more_body": asked < body_size}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "scheme": "http", "server": ("127.0.0.1", 5000), "client": ("127.0.0.1", 1234),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "http_version": "1.1"}
    await application(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), min(asked, body_size)


def test_a_huge_json_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    application = create_app(Settings(home=tmp_path / "home", run_jobs=False))
    big = str(400 * 1024 * 1024)
    json_headers = {"host": "127.0.0.1:5000", "content-type": "application/json"}
    # No CSRF header: 403 without reading a byte (it used to parse 400 MB first).
    status, read = asyncio.run(_asgi(application, "POST", "/api/models", {**json_headers, "content-length": big},
                                     400 * 1024 * 1024))
    assert (status, read) == (403, 0)
    # A token server: 401 without reading, whatever the size.
    tokened = create_app(Settings(home=tmp_path / "home", run_jobs=False, token="long-enough-token"))
    status, read = asyncio.run(_asgi(tokened, "POST", "/api/models", {**json_headers, **CSRF, "content-length": big},
                                     400 * 1024 * 1024))
    assert (status, read) == (401, 0)
    # With the header: 413 from the Content-Length (non-upload routes take 1 MB)...
    status, read = asyncio.run(_asgi(application, "POST", "/api/models", {**json_headers, **CSRF, "content-length": big},
                                     400 * 1024 * 1024))
    assert (status, read) == (413, 0)
    # ... and without one (chunked), the reading stops just past the limit.
    status, read = asyncio.run(_asgi(application, "POST", "/api/models", {**json_headers, **CSRF}, 400 * 1024 * 1024))
    assert status == 413 and read <= 2 * 1024 * 1024


def test_non_upload_routes_take_small_bodies_and_say_so(client: TestClient) -> None:
    padding = "x" * (1024 * 1024 + 10)
    answer = client.post("/api/datasets", headers=CSRF, json={"name": "d", "sample": True, "pad": padding})
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith("the request body is larger than the limit of 1 MB for /api/datasets")
    # The upload routes keep their own, larger limits (a 1.5 MB zip is read, then refused as not a zip).
    answer = client.post("/api/datasets/upload", headers=CSRF, data={"name": "z"},
                         files={"file": ("big.zip", os.urandom(1536 * 1024))})
    assert answer.status_code == 400 and "not a zip file" in answer.json()["detail"]


def test_plain_forms_still_carry_the_csrf_token_as_a_field(client: TestClient) -> None:
    client.cookies.set("shoal_csrf", "cookie-value")
    answer = client.post("/api/jobs/1/abort", data={"csrf_token": "cookie-value"})
    assert answer.status_code == 404  # past the CSRF check: there is no job 1
    assert client.post("/api/jobs/1/abort", data={"csrf_token": "forged"}).status_code == 403
    assert client.post("/api/jobs/1/abort", json={}).status_code == 403  # JSON needs the header


# -- item 5: list files --------------------------------------------------------------------------------
def test_list_files_must_be_small_regular_files(roots: Path, client: TestClient, shoal_home: Path) -> None:
    fifo = roots / "list.fifo"
    os.mkfifo(fifo)
    huge = roots / "huge.txt"
    with open(huge, "wb") as out:
        out.truncate(65 * 1024 * 1024)  # sparse: no disk used, one byte over the limit is enough
    (roots / "zero").symlink_to("/dev/zero")
    for path, needle in ((fifo, "is not a regular file"), (huge, "is larger than 64 MiB"),
                         (roots / "zero", "outside the folders")):
        answer = client.post("/api/datasets", headers=CSRF, json={"name": "d", "options": {"list_file": str(path)}})
        assert answer.status_code == 400, path
        assert needle in answer.json()["detail"], answer.json()
    for path, needle in ((fifo, "is not a regular file (a folder, device or pipe)"),
                         (Path("/dev/zero"), "is not a regular file"), (huge, "is larger than 64 MiB: split it")):
        # A command of its own, so that opening the pipe (which blocks until a writer comes) fails the test
        # at the deadline instead of hanging it.
        result = subprocess.run([sys.executable, "-m", "shoal", "dataset", "create", "--list", str(path),
                                 "--name", "d"], capture_output=True, text=True, timeout=GENEROUS_S, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert f"Error: list file '{path}' {needle}" in output
        assert "Traceback" not in output
    with pytest.raises(DatasetError, match="is not a regular file"):
        datasets.create(None, "d", list_file=str(fifo))


# -- item 10: 4xx with a message, never a 500 ------------------------------------------------------------
def test_odd_numbers_are_4xx(rgb: ToyModel, roots: Path) -> None:
    with TestClient(create_app(Settings(home=rgb.home, roots=(roots,), run_jobs=False)), base_url=LOCAL) as c:
        answer = c.post("/api/models", headers=CSRF, json={"dataset": rgb.dataset, "network": "lenet",
                                                           "previous": rgb.name, "previous_epoch": "²"})
        assert answer.status_code == 400
        assert answer.json()["detail"].startswith(f"model {rgb.name!r} has no snapshot of epoch '²'")
        answer = c.get(f"/api/models/{rgb.name}/download", params={"epoch": "²"})
        assert answer.status_code == 404 and "has no snapshot of epoch '²'" in answer.json()["detail"]
        for job in ("10000000000000000000000", "0", "-1"):
            for method, path in (("GET", f"/api/jobs/{job}"), ("POST", f"/api/jobs/{job}/abort")):
                answer = c.request(method, path, headers=CSRF)
                assert answer.status_code == 422, (path, answer.text)
                assert "job_id" in answer.json()["detail"]
        assert c.get("/api/jobs/9223372036854775807").status_code == 404
        assert Store(rgb.home).list_jobs() == []


@pytest.mark.parametrize(("params", "needle"), [
    ({"lr": "1e400"}, "lr must be a number > 0 and <= 10, got inf"),
    ({"lr": "1e300"}, "lr must be a number > 0 and <= 10"),
    ({"lr": "nan"}, "lr must be a number"),
    ({"policy": "exp", "gamma": "1e300"}, "gamma must be a number from 0 to 100"),
    ({"policy": "step", "gamma": "50"}, "gamma must be at most 1 with lr_policy step"),
    ({"policy": "poly", "power": "1e300"}, "power must be a number from 0 to 100"),
    ({"policy": "step", "step_size": "1e300"}, "step_size must be a number > 0 and <= 100000"),
    ({"policy": "multistep", "step_values": "1e400"}, "step_values must be epochs from 0 to 100000"),
    ({"epochs": "10000000000000000000000"}, "epochs"),
    ({"policy": "nope"}, "lr_policy must be one of"),
])
def test_the_schedule_preview_refuses_huge_values(client: TestClient, params: dict, needle: str) -> None:
    answer = client.get("/api/schedule", params=params)
    assert answer.status_code in (400, 422), answer.text
    assert needle in answer.json()["detail"]


def test_the_schedule_preview_still_draws_the_largest_allowed_values(client: TestClient) -> None:
    for policy in ("step", "exp", "inv", "poly", "sigmoid", "multistep"):
        answer = client.get("/api/schedule", params={"policy": policy, "epochs": 100000, "lr": 10, "gamma": 1 if policy
                                                     in ("step", "exp", "multistep") else 100, "power": 100,
                                                     "step_size": 100000, "step_values": "0,100000"})
        assert answer.status_code == 200, (policy, answer.text)


def _lying_zips() -> dict[str, bytes]:
    """Zips whose headers lie, each built from a good one and patched."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("a/1.png", png_bytes())
        z.writestr("b/1.png", png_bytes())
    good = buffer.getvalue()
    info = zipfile.ZipFile(io.BytesIO(good)).infolist()[0]
    local = info.header_offset
    name_len, extra_len = struct.unpack("<HH", good[local + 26:local + 30])
    data_at = local + 30 + name_len + extra_len
    central = good.index(b"PK\x01\x02")

    def patched(*edits: tuple[int, bytes]) -> bytes:
        out = bytearray(good)
        for at, value in edits:
            out[at:at + len(value)] = value
        return bytes(out)

    deflated = io.BytesIO()
    with zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/1.png", os.urandom(2000))
        z.writestr("b/1.png", png_bytes())
    deflated_bytes = bytearray(deflated.getvalue())
    d_info = zipfile.ZipFile(io.BytesIO(bytes(deflated_bytes))).infolist()[0]
    d_name, d_extra = struct.unpack("<HH", deflated_bytes[d_info.header_offset + 26:d_info.header_offset + 30])
    d_data = d_info.header_offset + 30 + d_name + d_extra
    deflated_bytes[d_data:d_data + 8] = b"\xff" * 8
    return {
        "bad checksum": patched((data_at + 40, b"\x00\x01\x02\x03")),
        "unknown method": patched((local + 8, struct.pack("<H", 99)), (central + 10, struct.pack("<H", 99))),
        "names differ": patched((local + 30, b"z")),
        "encrypted": patched((local + 6, b"\x01\x00"), (central + 8, b"\x01\x00")),
        "broken deflate": bytes(deflated_bytes),
        "central directory cut": good[:-10],
    }


@pytest.mark.parametrize("case", sorted(_lying_zips()))
def test_zips_with_lying_headers_are_a_400(rgb: ToyModel, tmp_path: Path, roots: Path, case: str) -> None:
    data = _lying_zips()[case]
    home = tmp_path / "home"
    with TestClient(create_app(Settings(home=home, roots=(roots,), run_jobs=False)), base_url=LOCAL) as c:
        answer = c.post("/api/datasets/upload", headers=CSRF, data={"name": "z"}, files={"file": ("z.zip", data)})
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"].startswith(("the zip is damaged", "the upload is not a zip file"))
        assert not any((home / "uploads").glob("z-*"))  # nothing extracted is left
    with TestClient(create_app(Settings(home=rgb.home, roots=(roots,), run_jobs=False)), base_url=LOCAL) as c:
        answer = c.post(f"/api/models/{rgb.name}/classify-many", headers=CSRF, files={"archive": ("z.zip", data)})
        assert answer.status_code == 400, answer.text


# -- item 11: parallel downloads ------------------------------------------------------------------------
@pytest.fixture()
def live(rgb: ToyModel, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The web app on 127.0.0.1 over a copy of the toy model's store (no download cached yet)."""
    import uvicorn

    home = tmp_path / "home"
    shutil.copytree(rgb.home, home, symlinks=True)
    shutil.rmtree(models.ModelFolder.of(rgb.name, store=Store(home)).downloads_path, ignore_errors=True)
    # The socket is bound here and handed to uvicorn, so no other process can take the port in between.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(Settings(home=home, run_jobs=False, port=port)),
                                               host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            wait_for("the web app to start", lambda: server.started or not thread.is_alive(), every=0.05)
            if not server.started:
                pytest.fail("the web app did not start (its thread ended): see the log above")
            yield f"http://127.0.0.1:{port}", rgb.name
        finally:
            server.should_exit = True
            thread.join(timeout=GENEROUS_S)
        assert not thread.is_alive(), "the web app did not stop"


def _get(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers={"X-Shoal-CSRF": "1"})
    try:
        with urllib.request.urlopen(request, timeout=GENEROUS_S) as response:  # noqa: S310 - loopback test server
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str) -> tuple[int, bytes]:
    return _get(url, "POST")


def test_six_parallel_downloads_of_one_bundle_all_succeed(live: tuple[str, str], tmp_path: Path) -> None:
    base, name = live
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(_get, [f"{base}/api/models/{name}/download"] * 6))
    assert [status for status, _ in results] == [200] * 6
    assert len({body for _, body in results}) == 1
    with zipfile.ZipFile(io.BytesIO(results[0][1])) as z:
        assert z.testzip() is None and "shoal.json" in z.namelist()


def test_parallel_exports_of_one_epoch_queue_one_job(live: tuple[str, str], tmp_path: Path) -> None:
    base, name = live
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(_post, [f"{base}/api/models/{name}/export?epoch=last"] * 6))
    assert [status for status, _ in results] == [202] * 6
    jobs = {json.loads(body)["job"]["id"] for _, body in results}
    store = Store(tmp_path / "home")
    assert len(jobs) == 1 and [j.id for j in store.list_jobs(kind="export")] == list(jobs)


# -- item 12: smaller holes -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pets\n", "pets\r\n", "\npets", "pe\nts"])
def test_names_with_a_line_break_are_refused(client: TestClient, name: str) -> None:
    with pytest.raises(ConfigError, match="is not allowed"):
        check_name(name, "dataset")
    answer = client.post("/api/datasets", headers=CSRF, json={"name": name, "sample": True})
    assert answer.status_code == 400 and "is not allowed" in answer.json()["detail"]


@pytest.mark.parametrize("path", ["//evil.example/x", "/\\evil.example/x", "///evil.example", "/\\/evil.example"])
def test_the_token_redirect_stays_on_this_server(tmp_path: Path, path: str) -> None:
    settings = Settings(home=tmp_path / "home", run_jobs=False, token="long-enough-token")
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        answer = c.get(f"{LOCAL}{path}?token=long-enough-token&a=1", follow_redirects=False)
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
        assert location.endswith("?a=1") and "evil.example" in location  # a path on this server
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        answer = c.get(f"{LOCAL}/models/a b?token=long-enough-token", follow_redirects=False)
        assert answer.headers["location"] == "/models/a%20b"


def test_server_builds_skip_images_linked_from_outside_the_roots(image_folder_factory, tmp_path: Path,
                                                                 shoal_home: Path) -> None:
    root = image_folder_factory(["cat", "dog"], 4, size=(12, 12), name="allowed-root")
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (12, 12), (1, 2, 3)).save(secret)
    (root / "cat" / "zz-link.png").symlink_to(secret)
    (root / "dog" / "sub").symlink_to(secret.parent, target_is_directory=True)
    listed = root / "list.txt"
    listed.write_text(f"{secret} cat\n{root / 'cat' / 'cat_000.png'} cat\n{root / 'dog' / 'dog_000.png'} dog\n"
                      f"{root / 'dog' / 'dog_001.png'} dog\n{root / 'cat' / 'cat_001.png'} cat\n")
    ds = datasets.create(root, "confined", within=[root], val_pct=0)
    sources = ds.sources("train")
    assert str(secret) not in sources and not any("zz-link" in s or "/sub/" in s for s in sources)
    assert len(sources) == 8
    reasons = {s["path"]: s["reason"] for s in ds.to_dict()["skipped"]}
    assert "outside the folders this server may read" in reasons[str(root / "cat" / "zz-link.png")]
    assert "outside the folders this server may read" in reasons[str(root / "dog" / "sub" / "secret.png")]
    listed_ds = datasets.create(None, "confined-list", within=[root], list_file=str(listed), val_pct=0, min_per_class=1)
    assert str(secret) not in listed_ds.sources("train") and len(listed_ds.sources("train")) == 4
    # The CLI and Python read wherever the links lead (the user's own files).
    assert len(datasets.create(root, "free", val_pct=0).sources("train")) == 10


def test_the_cli_refuses_to_delete_what_a_training_uses(tiny_dataset, shoal_home: Path) -> None:
    store = Store(shoal_home)
    store.reserve("model", "busy", status="running", summary={"pid": os.getpid(), "dataset": "tiny"})
    result = run_cli("model", "delete", "busy")
    assert result.exit_code == 1
    assert "Error: model 'busy' is running: a training of it waits or runs" in result.output
    # 'shoal dataset delete' ends in datasets.delete, whatever its flags for finished models say.
    with pytest.raises(TrainingError, match="dataset 'tiny' is in use: model 'busy' is training on it"):
        datasets.delete("tiny", store=store)
    assert store.exists("model", "busy") and store.exists("dataset", "tiny")
    # A job of the web app's queue counts too, before its model exists.
    job = store.add_job("train", "queued-one", lane="cpu", params={"config": {"dataset": "tiny"}})
    store.update("model", "busy", status="done")
    with pytest.raises(TrainingError, match="'queued-one' is training on it"):
        datasets.delete("tiny", store=store)
    store.update_job(job.id, status="aborted")
    # Once the runs are over, both go.
    assert run_cli("model", "delete", "busy").exit_code == 0
    datasets.delete("tiny", store=store)
    assert not store.exists("dataset", "tiny")


def test_model_list_shows_a_killed_cli_training_as_interrupted(shoal_home: Path) -> None:
    store = Store(shoal_home)
    store.reserve("model", "killed", status="running", summary={"pid": _dead_pid(), "dataset": "d"})
    store.reserve("model", "alive", status="running", summary={"pid": os.getpid(), "dataset": "d"})
    result = run_cli("model", "list", "--json")
    assert result.exit_code == 0, result.output
    assert {m["name"]: m["status"] for m in json.loads(result.stdout)} == {"killed": "interrupted", "alive": "running"}
