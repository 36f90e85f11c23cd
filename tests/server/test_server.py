"""The web app's endpoints with FastAPI's test client: pages, JSON API, safety rules, bad input.

Trainings and dataset builds are only queued here (``run_jobs=False``), except where a test
says otherwise; ``test_server_jobs.py`` runs real worker processes. Classification and
downloads use the session's toy model (``inference_fixtures``), read-only.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import shoal
from inference_fixtures import ToyModel
from shoal.errors import ConfigError, InputError
from shoal.server import Settings, create_app, get_settings
from shoal.server.deps import get_store
from shoal.server.jobs import device_lane
from shoal.server.security import confine, safe_extract
from shoal.store import Store

CSRF = {"X-Shoal-CSRF": "1"}
LOCAL = "http://127.0.0.1"  # the server answers to loopback names only (TestClient's default is 'testserver')


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def toy(rgb: ToyModel) -> ToyModel:
    return rgb


@pytest.fixture()
def settings(tmp_path: Path, roots: Path) -> Settings:
    return Settings(home=tmp_path / "home", roots=(roots,), run_jobs=False)


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        yield c


@pytest.fixture()
def toy_client(toy: ToyModel, roots: Path) -> Iterator[TestClient]:
    """A client over the toy model's store (read-only use: classify, download, explore)."""
    with TestClient(create_app(Settings(home=toy.home, roots=(roots,), run_jobs=False)), base_url=LOCAL) as c:
        yield c


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def class_zip(toy: ToyModel, per_class: int = 3, prefix: str = "") -> bytes:
    members = {}
    for label in toy.labels:
        for path in sorted((toy.images / label).iterdir())[:per_class]:
            members[f"{prefix}{label}/{path.name}"] = path.read_bytes()
    return zip_bytes(members)


def first_image(toy: ToyModel, label: str = "circle") -> Path:
    return sorted((toy.images / label).glob("*.png"))[0]


# -- pages ---------------------------------------------------------------------------------------------
def test_every_page_renders_for_a_trained_model(toy_client: TestClient, toy: ToyModel) -> None:
    pages = {
        "/": ["Datasets", "Models", "Jobs", "Pretrained networks", "efficientnet_lite0"],
        "/datasets/new": ["New dataset", "Upload a zip", "Built-in sample", "Resize mode", "Validation %"],
        f"/datasets/{toy.dataset}": ["Images per class and split", "Mean training image", "Skipped files", "Explore"],
        "/models/new": ["New model", "Learning-rate schedule", "Batch size", "Momentum", "Policy", "Early stop after"],
        f"/models/new?clone={toy.name}": ["cloned from", toy.name],
        f"/models/{toy.name}": ["Loss and accuracy", "Learning rate", "Download", "Classify one image",
                                "Classify many", "Evaluation", "Configuration"],
        "/pretrained": ["Uploaded weights", "Upload a network file"],
        f"/datasets/new?clone={toy.dataset}": ["cloned from"],
    }
    for url, needles in pages.items():
        response = toy_client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("text/html")
        for needle in needles:
            assert needle in response.text, (url, needle)
        assert "https://" not in response.text.split("<footer>")[0].replace("https://… address", ""), url


def test_the_new_model_form_shows_every_training_option_with_its_explanation(client: TestClient) -> None:
    import dataclasses

    from shoal.config import field_docs
    from shoal.training import TrainConfig

    page = client.get("/models/new").text
    comments = field_docs(TrainConfig)
    # The form needs a dataset; with none, it says so instead.
    assert "There is no dataset yet" in page
    store = Store(client.app.state.settings.home)
    with store.staging("dataset", "stub", summary={"classes": ["a", "b"], "counts": {"train": 4}}) as folder:
        (folder / "dataset.json").write_text("{}")
    page = client.get("/models/new").text
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("dataset", "network", "name", "pretrained"):
            continue
        assert f'name="{f.name}"' in page, f.name
        assert comments[f.name].replace("'", "&#39;").replace('"', "&#34;") in page, f.name


def test_unknown_pages_and_models_answer_404_pages_and_json(client: TestClient) -> None:
    page = client.get("/nowhere", headers={"accept": "text/html"})
    assert page.status_code == 404 and "Not found" in page.text and "Traceback" not in page.text
    page = client.get("/models/ghost", headers={"accept": "text/html"})
    assert page.status_code == 404 and "no model named &#39;ghost&#39;" in page.text
    api = client.get("/api/models/ghost")
    assert api.status_code == 404
    assert api.json() == {"detail": f"no model named 'ghost' in {client.app.state.settings.home} (known: none yet)"}
    assert client.get("/api/datasets/ghost").status_code == 404
    assert client.get("/api/jobs/99").json()["detail"].startswith("no job 99")


def test_the_api_is_documented_and_plotly_is_served_locally(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/api/datasets", "/api/datasets/{name}", "/api/models", "/api/models/{name}",
                 "/api/models/{name}/abort", "/api/models/{name}/classify", "/api/models/{name}/download",
                 "/api/models/{name}/events", "/api/models/{name}/resume", "/api/schedule", "/api/jobs"):
        assert path in spec["paths"], path
    options = spec["components"]["schemas"]["TrainOptions"]["properties"]
    assert options["momentum"]["description"].startswith("for sgd, nesterov and rmsprop (default: 0.9)")
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in docs.text
    assert "https://" not in docs.text  # no CDN: the API docs work offline
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/swagger/swagger-ui.css").status_code == 200
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and b"plotly" in js.content[:2000].lower() and len(js.content) > 1_000_000
    assert client.get("/static/style.css").status_code == 200
    for page in ("/", "/models/new", "/datasets/new", "/pretrained"):
        scripts = [line for line in client.get(page).text.splitlines() if "<script src=" in line]
        assert all('src="/static/' in line for line in scripts), scripts


# -- safety: token, CSRF, sizes, folders, zips ------------------------------------------------------------
def test_listening_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="listening on '0.0.0.0' lets other machines connect, so it needs an access "
                                          "token: pass --token TOKEN or set SHOAL_TOKEN"):
        Settings(home=tmp_path, host="0.0.0.0")
    with pytest.raises(ConfigError, match="at least 8 characters"):
        Settings(home=tmp_path, host="0.0.0.0", token="short")
    assert Settings(home=tmp_path, host="0.0.0.0", token="long-enough-token").token == "long-enough-token"
    assert Settings(home=tmp_path, host="::1").token is None


def test_the_token_is_checked_on_every_request(tmp_path: Path) -> None:
    token = "s3cret-token-for-tests"
    app = create_app(Settings(home=tmp_path / "home", host="0.0.0.0", token=token, run_jobs=False))
    with TestClient(app, base_url=LOCAL) as c:
        for url in ("/", "/api/models", "/static/style.css", "/docs", "/openapi.json", "/static/plotly.min.js"):
            answer = c.get(url)
            assert answer.status_code == 401, url
            assert "needs its access token" in answer.json()["detail"]
        assert c.get("/api/models", headers={"Authorization": "Bearer wrong-token-xx"}).status_code == 401
        assert c.get("/api/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # The bearer token also stands in for the CSRF header (scripts).
        made = c.post("/api/datasets", json={"name": "x", "sample": False}, headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 400 and "say where the images are" in made.json()["detail"]
        # A browser opens the printed address once: the token moves into a cookie.
        first = c.get(f"/?token={token}&x=1", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/?x=1"
        assert "HttpOnly" in first.headers["set-cookie"]
        assert c.get("/").status_code == 200
        assert c.get("/api/jobs").status_code == 200


def test_state_changing_requests_need_the_csrf_header_or_form_token(toy_client: TestClient, toy: ToyModel) -> None:
    url = f"/api/models/{toy.name}/classify"
    image = first_image(toy).read_bytes()
    fresh = TestClient(toy_client.app, base_url=LOCAL)  # no cookie yet, like a script or another site's form
    refused = fresh.post(url, files={"file": ("a.png", image)})
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("missing CSRF token")
    assert fresh.post(url, files={"file": ("a.png", image)}, headers=CSRF).status_code == 200
    # A page sets the cookie; then the header must match it (double submit) ...
    page = toy_client.get("/")
    token = page.cookies.get("shoal_csrf") or toy_client.cookies.get("shoal_csrf")
    assert token and f'content="{token}"' in page.text
    assert toy_client.post(url, files={"file": ("a.png", image)}, headers={"X-Shoal-CSRF": "forged"}).status_code == 403
    assert toy_client.post(url, files={"file": ("a.png", image)}, headers={"X-Shoal-CSRF": token}).status_code == 200
    # ... or, for a plain HTML form, the csrf_token field must.
    assert toy_client.post(url, files={"file": ("a.png", image)}, data={"csrf_token": token}).status_code == 200
    assert toy_client.post(url, files={"file": ("a.png", image)}, data={"csrf_token": "forged"}).status_code == 403
    # Reading never needs it.
    assert fresh.get(f"/api/models/{toy.name}").status_code == 200


def test_uploads_over_the_limit_get_413(toy: ToyModel, roots: Path) -> None:
    settings = Settings(home=toy.home, roots=(roots,), run_jobs=False, max_image_bytes=2000, max_zip_bytes=5000)
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        url = f"/api/models/{toy.name}/classify"
        big = png_bytes(size=(400, 400)) + os.urandom(4000)
        answer = c.post(url, files={"file": ("big.png", big)}, headers=CSRF)
        assert answer.status_code == 413
        assert answer.json()["detail"] == "the image 'big.png' is larger than the limit of 2 KB"
        # A body far past the limit is refused from its Content-Length, before it is read.
        answer = c.post(url, files={"file": ("huge.png", big + os.urandom(100_000))}, headers=CSRF)
        assert answer.status_code == 413
        assert answer.json()["detail"].startswith("the upload is larger than the limit of 66 KB")
        # Without Content-Length (chunked), the limit stops the reading as well.
        def chunks() -> Iterator[bytes]:
            yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'
            for _ in range(100):
                yield b"x" * 1000
        answer = c.post("/api/datasets/upload", content=chunks(),
                        headers={**CSRF, "content-type": "multipart/form-data; boundary=xyz"})
        assert answer.status_code == 413
        answer = c.post("/api/datasets/upload", data={"name": "big"}, headers=CSRF,
                        files={"file": ("big.zip", zip_bytes({"a/1.png": os.urandom(8000)}))})
        assert answer.status_code == 413


def test_uploaded_images_are_validated(toy_client: TestClient, toy: ToyModel) -> None:
    url = f"/api/models/{toy.name}/classify"
    cases = {
        "notes.png": (b"this is text, not a picture", "cannot read image notes.png: not an image"),
        "empty.jpg": (b"", "cannot read image empty.jpg: empty file (0 bytes)"),
        "cut.png": (png_bytes()[:60], "cannot read image cut.png:"),
    }
    for name, (data, message) in cases.items():
        answer = toy_client.post(url, files={"file": (name, data)}, headers=CSRF)
        assert answer.status_code == 400, name
        assert answer.json()["detail"].startswith(message), answer.json()
    answer = toy_client.post(f"/api/models/{toy.name}/classify-many", headers=CSRF,
                             files=[("files", ("good.png", png_bytes())), ("files", ("bad.png", b"nope"))])
    assert answer.status_code == 400 and answer.json()["detail"].startswith("cannot read image bad.png")


def test_server_side_folders_stay_inside_the_roots(tmp_path: Path, roots: Path) -> None:
    inside = roots / "photos"
    inside.mkdir()
    outside = tmp_path / "private"
    outside.mkdir()
    (roots / "escape").symlink_to(outside)
    assert confine(str(inside), (roots,)) == inside.resolve()
    assert confine("photos", (roots,)) == inside.resolve()  # relative to the first root
    for bad in (str(outside), str(roots / ".." / "private"), str(roots / "escape"), "/etc"):
        with pytest.raises(InputError, match="is outside the folders this server may read"):
            confine(bad, (roots,))
    with pytest.raises(InputError, match="does not exist on the server"):
        confine(str(roots / "missing"), (roots,))
    with pytest.raises(InputError, match="allows no server-side folders; upload a zip instead"):
        confine(str(inside), ())


def test_dataset_folders_and_list_files_are_confined(client: TestClient, roots: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "a").mkdir(parents=True)
    answer = client.post("/api/datasets", json={"name": "d1", "folder": str(outside)}, headers=CSRF)
    assert answer.status_code == 400 and "is outside the folders this server may read" in answer.json()["detail"]
    # A list file inside the roots may not point at images outside them.
    (outside / "a" / "x.png").write_bytes(png_bytes())
    listing = roots / "list.txt"
    listing.write_text(f"{outside / 'a' / 'x.png'} a\n")
    answer = client.post("/api/datasets", json={"name": "d2", "options": {"list_file": str(listing)}}, headers=CSRF)
    assert answer.status_code == 400
    assert "image listed in the list file" in answer.json()["detail"]
    answer = client.post("/api/datasets", json={"name": "d3", "folder": str(roots),
                                                "options": {"val_folder": str(outside)}}, headers=CSRF)
    assert answer.status_code == 400 and "outside" in answer.json()["detail"]
    # Browsing lists sub-folders of the roots only.
    (roots / "cats").mkdir()
    listed = client.get("/api/folders", params={"path": str(roots)}).json()
    assert listed["folders"] == [str(roots / "cats")]
    assert client.get("/api/folders", params={"path": str(outside)}).status_code == 400


def test_zip_extraction_refuses_traversal_links_and_bombs(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", max_unzipped_bytes=10_000_000, max_zip_members=50, max_zip_ratio=100)

    def attempt(name: str, data: bytes) -> None:
        archive = tmp_path / f"{name}.zip"
        archive.write_bytes(data)
        safe_extract(archive, tmp_path / f"out-{name}", settings)

    cases = {
        "traversal": (zip_bytes({"a/1.png": b"x", "../evil.png": b"x"}), "unsafe path '../evil.png'"),
        "absolute": (zip_bytes({"/etc/evil.png": b"x"}), "unsafe path '/etc/evil.png'"),
        "bomb": (zip_bytes({"a/big.png": b"\0" * 5_000_000}), "compressed .* times, more than the limit of 100"),
        "many": (zip_bytes({f"a/{i}.png": b"x" for i in range(60)}), "holds 60 files, more than the limit of 50"),
        "notzip": (b"PK but not really a zip", "the upload is not a zip file"),
    }
    link = io.BytesIO()
    with zipfile.ZipFile(link, "w") as z:
        info = zipfile.ZipInfo("a/link.png")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    cases["symlink"] = (link.getvalue(), "is a link or special file")
    for name, (data, message) in cases.items():
        with pytest.raises(InputError, match=message):
            attempt(name, data)
        assert not (tmp_path / f"out-{name}").exists(), name
        assert not (tmp_path / "evil.png").exists()
    # A zip whose classes sit in one top folder gives that folder as the root.
    archive = tmp_path / "ok.zip"
    archive.write_bytes(zip_bytes({"photos/a/1.png": b"x", "photos/b/2.png": b"y", "__MACOSX/._junk": b""}))
    assert safe_extract(archive, tmp_path / "ok", settings) == tmp_path / "ok" / "photos"


def test_a_zip_upload_with_traversal_is_refused_by_the_api(client: TestClient) -> None:
    answer = client.post("/api/datasets/upload", data={"name": "evil"}, headers=CSRF,
                         files={"file": ("evil.zip", zip_bytes({"../../x.png": png_bytes()}))})
    assert answer.status_code == 400 and "unsafe path" in answer.json()["detail"]
    assert client.get("/api/jobs").json() == []


def test_no_stack_trace_reaches_the_client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.server import services

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals at /home/somebody")

    monkeypatch.setattr(services, "list_jobs", broken)
    with TestClient(create_app(settings), base_url=LOCAL, raise_server_exceptions=False) as c:
        api = c.get("/api/jobs")
        assert api.status_code == 500
        assert api.json() == {"detail": "the server met an unexpected error; the details are in its log"}
        page = c.get("/", headers={"accept": "text/html"})
        assert page.status_code == 500 and "secret" not in page.text and "Traceback" not in page.text


# -- datasets --------------------------------------------------------------------------------------------
def test_dataset_builds_are_queued_with_their_options_checked(client: TestClient, roots: Path) -> None:
    (roots / "photos" / "a").mkdir(parents=True)
    answer = client.post("/api/datasets", json={"name": "pets", "folder": str(roots / "photos"),
                                                "options": {"size": "64x48", "val_pct": 20}}, headers=CSRF)
    assert answer.status_code == 202
    body = answer.json()
    assert body["url"] == "/datasets/pets" and body["job"]["status"] == "queued" and body["job"]["lane"] == "data"
    store = Store(client.app.state.settings.home)
    job = store.get_job(body["job"]["id"])
    assert job.params == {"source": str((roots / "photos").resolve()), "options": {"size": [64, 48], "val_pct": 20.0},
                          "within": [str(roots.resolve())]}  # the worker reads images inside the roots only
    # While it waits, the dataset page and API show the build.
    assert client.get("/api/datasets/pets").json()["status"] == "queued"
    assert "dataset build" in client.get("/datasets/pets").text
    client.cookies.clear()  # the page set a CSRF cookie; this test posts like a script
    assert [d["name"] for d in client.get("/api/datasets").json()] == ["pets"]
    # The same name cannot be queued twice; bad names and options fail before anything is queued.
    again = client.post("/api/datasets", json={"name": "pets", "folder": str(roots / "photos")}, headers=CSRF)
    assert again.status_code == 409 and "already exists or is being built" in again.json()["detail"]
    cases = [
        ({"name": "bad name!", "folder": "photos"}, 400, "dataset name 'bad name!' is not allowed"),
        ({"name": "p2", "folder": "photos", "options": {"val_pct": 95}}, 400, "val_pct must be a number from 0 to 90"),
        ({"name": "p2", "folder": "photos", "options": {"resize_mode": "zoom"}}, 400, "resize_mode must be one of"),
        ({"name": "p2", "folder": "photos", "options": {"val_pc": 10}}, 422, "options.val_pc: is not an option; did you mean 'val_pct'?"),
        ({"name": "p2", "folder": "photos", "options": {"size": "big"}}, 400, "size must be one number or WxH"),
        ({"name": "p2"}, 400, "say where the images are"),
    ]
    for body, status, message in cases:
        answer = client.post("/api/datasets", json=body, headers=CSRF)
        assert answer.status_code == status, body
        assert message in answer.json()["detail"], answer.json()
    assert len(store.list_jobs()) == 1


def test_a_queued_build_can_be_aborted_and_forgotten(client: TestClient) -> None:
    job = client.post("/api/datasets", json={"name": "digits", "sample": True}, headers=CSRF).json()["job"]
    assert job["queue_position"] == 0
    aborted = client.post(f"/api/jobs/{job['id']}/abort", headers=CSRF)
    assert aborted.status_code == 200 and aborted.json()["status"] == "aborted"
    again = client.post(f"/api/jobs/{job['id']}/abort", headers=CSRF)
    assert again.status_code == 409 and "only queued or running jobs can be aborted" in again.json()["detail"]
    assert client.delete("/api/datasets/digits", headers=CSRF).status_code == 204
    assert client.get("/api/datasets/digits").status_code == 404


def test_a_stored_dataset_is_explored_through_the_api(toy_client: TestClient, toy: ToyModel) -> None:
    info = toy_client.get(f"/api/datasets/{toy.dataset}").json()
    assert info["status"] == "done" and info["classes"] == list(toy.labels)
    assert info["models"] == [toy.name] and info["skipped"] == []
    page = toy_client.get(f"/api/datasets/{toy.dataset}/images", params={"split": "train", "per_page": 5}).json()
    assert page["total"] == info["counts"]["train"] and len(page["items"]) == 5
    assert [item["label"] for item in page["items"][:3]] == list(toy.labels)  # classes in turn
    one = toy_client.get(f"/api/datasets/{toy.dataset}/images", params={"split": "val", "label": "square"}).json()
    assert one["total"] == info["splits"]["val"]["square"] and {i["label"] for i in one["items"]} == {"square"}
    png = toy_client.get(f"/api/datasets/{toy.dataset}/images/val/{one['items'][0]['index']}.png")
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == tuple(info["size"])
    mean = toy_client.get(f"/api/datasets/{toy.dataset}/mean.png")
    assert mean.status_code == 200 and mean.headers["content-type"] == "image/png"
    bad = toy_client.get(f"/api/datasets/{toy.dataset}/images", params={"split": "dev"})
    assert bad.status_code == 400 and bad.json()["detail"] == "split must be one of train, val, test, got 'dev'"
    bad = toy_client.get(f"/api/datasets/{toy.dataset}/images", params={"label": "dog"})
    assert bad.status_code == 400 and "class 'dog' is not in dataset" in bad.json()["detail"]
    assert toy_client.get(f"/api/datasets/{toy.dataset}/images/val/9999.png").status_code == 400
    assert toy_client.get(f"/api/datasets/{toy.dataset}/images", params={"per_page": 0}).status_code == 422


# -- models ----------------------------------------------------------------------------------------------
@pytest.fixture()
def with_dataset(client: TestClient, image_folder_factory) -> TestClient:
    from shoal import datasets

    folder = image_folder_factory(["a", "b"], 6, size=(16, 16))
    datasets.create(folder, "ds", store=Store(client.app.state.settings.home), size=16)
    return client


def test_a_training_is_queued_and_shown_until_it_starts(with_dataset: TestClient) -> None:
    c = with_dataset
    answer = c.post("/api/models", json={"dataset": "ds", "network": "lenet", "options": {"epochs": 2}}, headers=CSRF)
    assert answer.status_code == 202
    (accepted,) = answer.json()["models"]
    assert accepted["name"] == "ds-lenet" and accepted["url"] == "/models/ds-lenet"
    assert accepted["job"]["lane"] == device_lane("auto") and device_lane("auto") in ("cpu", "cuda", "mps")
    model = c.get("/api/models/ds-lenet").json()
    assert model["status"] == "queued" and model["config"]["epochs"] == 2 and model["can_abort"]
    assert model["history"] == [] and c.get("/api/models/ds-lenet/events").json() == {"events": [], "next": 0,
                                                                                       "status": "queued"}
    listed = c.get("/api/models").json()
    assert [(m["name"], m["status"], m["dataset"]) for m in listed] == [("ds-lenet", "queued", "ds")]
    assert "ds-lenet" in c.get("/models/ds-lenet").text
    c.cookies.clear()
    again = c.post("/api/models", json={"dataset": "ds", "network": "lenet"}, headers=CSRF)
    assert again.status_code == 409 and "'ds-lenet' already exists or is queued" in again.json()["detail"]
    aborted = c.post("/api/models/ds-lenet/abort", headers=CSRF)
    assert aborted.status_code == 200 and aborted.json()["status"] == "aborted"


def test_the_new_model_form_offers_the_head_and_turns_the_loop_off_for_a_fitted_one(with_dataset: TestClient) -> None:
    from shoal.training.config import LOOP_OPTIONS

    page = with_dataset.get("/models/new").text
    head = page.split('<select id="f-head" name="head" data-kind="select">')[1].split("</select>")[0]
    assert '<option value="" selected>auto</option>' in head  # the run chooses: fit when fine-tuning a frozen backbone
    assert '<option value="fit" >fit (logistic regression, cross-validated)</option>' in head
    assert '<option value="sgd" >sgd (the training loop)</option>' in head
    for name in LOOP_OPTIONS:
        assert f'<div class="field" data-field="{name}" data-loop>' in page, name
    for name in ("batch_size", "freeze", "head", "flip", "seed"):
        assert f'<div class="field" data-field="{name}">' in page, name
    assert ("The training loop's options (greyed out) do not apply; choose head <b>sgd</b> to train the head "
            "with the loop instead.") in page


def test_a_fitted_head_is_queued_from_what_the_form_sends(with_dataset: TestClient) -> None:
    c = with_dataset
    store = Store(c.app.state.settings.home)
    # The form with the pretrained start and its defaults: the loop's fields are off, so not sent; the
    # checkboxes and drop-downs that are on send their values; the empty head ("auto") is left out.
    form = {"batch_size": 16, "flip": False, "color_jitter": 0, "mean": "auto", "device": "auto", "seed": 0}
    answer = c.post("/api/models", json={"dataset": "ds", "pretrained": True, "name": "fit", "options": form},
                    headers=CSRF)
    assert answer.status_code == 202, answer.text
    config = store.list_jobs()[-1].params["config"]
    assert (config["head"], config["epochs"], config["lr"], config["freeze"]) == ("fit", None, None, "backbone")
    assert c.get("/api/models/fit").json()["fit"] is None  # queued: nothing fitted yet
    # Head sgd turns the loop's fields on again.
    answer = c.post("/api/models", json={"dataset": "ds", "pretrained": True, "name": "loop",
                                         "options": {**form, "head": "sgd", "epochs": 2, "lr_policy": "step"}},
                    headers=CSRF)
    assert answer.status_code == 202, answer.text
    assert store.list_jobs()[-1].params["config"]["epochs"] == 2
    refused = c.post("/api/models", json={"dataset": "ds", "pretrained": True, "name": "odd",
                                          "options": {"head": "fit", "epochs": 2}}, headers=CSRF)
    assert refused.status_code == 400
    assert refused.json()["detail"] == ("epochs belongs to the training loop, which a fitted head does not run (its "
                                        "strength is chosen by cross-validation); use head sgd to train the head "
                                        "with the loop")


def _fitted_model(store: Store, name: str) -> None:
    """A model as a fitted head leaves it: its config, and the events of its run."""
    from shoal.models import ModelFolder

    store.reserve("model", name, status="done", summary={"dataset": "ds", "network": "efficientnet_lite0",
                                                         "best_epoch": 1, "val_accuracy": 0.9})
    folder = ModelFolder(store.folder("model", name))
    folder.write_config({"dataset": "ds", "network": "efficientnet_lite0", "pretrained": True, "freeze": "backbone",
                         "head": "fit", "epochs": None, "lr": None, "lr_policy": "cosine", "solver": "sgd", "seed": 0})
    curve = [{"C": c, "log_loss": loss, "accuracy": acc}
             for c, loss, acc in ((0.01, 0.6, 0.7), (0.1, 0.3, 0.9), (1.0, 0.2, 0.95), (10.0, 0.25, 0.95))]
    events = [{"type": "start", "head": "fit", "epoch": 0, "epochs": 1},
              {"type": "features", "done": 12, "total": 12, "elapsed_s": 1.0},
              {"type": "cross_validation", "done": 5, "total": 5, "elapsed_s": 1.5},
              {"type": "fit", "method": "logistic_regression", "strength": 1.0, "folds": 5, "curve": curve,
               "elapsed_s": 1.6},
              {"type": "epoch", "epoch": 1, "train_loss": 0.1, "val_loss": 0.25, "val_accuracy": 0.9,
               "val_unfamiliar": 0.05, "elapsed_s": 1.7},
              {"type": "done", "best_epoch": 1, "elapsed_s": 2.0}]
    folder.metrics_path.write_text("".join(json.dumps({"time": 0.0, **e}) + "\n" for e in events))


def test_a_fitted_heads_page_shows_the_fit_not_epochs(client: TestClient) -> None:
    _fitted_model(Store(client.app.state.settings.home), "fitted")
    model = client.get("/api/models/fitted").json()
    assert model["fit"] == {"method": "logistic_regression", "strength": 1.0, "folds": 5, "elapsed_s": 1.6,
                            "curve": [{"C": 0.01, "log_loss": 0.6, "accuracy": 0.7},
                                      {"C": 0.1, "log_loss": 0.3, "accuracy": 0.9},
                                      {"C": 1.0, "log_loss": 0.2, "accuracy": 0.95},
                                      {"C": 10.0, "log_loss": 0.25, "accuracy": 0.95}]}
    assert model["epochs"] is None and model["can_resume"] is False
    assert model["history"][0]["val_unfamiliar"] == 0.05
    events = client.get("/api/models/fitted/events").json()["events"]
    assert [e["type"] for e in events] == ["start", "features", "cross_validation", "fit", "epoch", "done"]
    page = client.get("/models/fitted").text
    for needle in ("head fitted on pretrained features", "Fitting the head", "<h2>Cross-validation</h2>",
                   "What the fit did", 'id="fit-chart"',
                   "the C with the lowest held-out log-loss was kept. The validation split played no part in that "
                   "choice, so its figures are honest.",
                   "The training loop's options are left out: a fitted head runs no loop."):
        assert needle in page, needle
    for absent in ("Loss and accuracy", 'id="lr-chart"', 'id="epochs-card"', '<span class="k">lr_policy</span>',
                   '<span class="k">epochs</span>'):
        assert absent not in page, absent
    assert '<span class="k">head</span>' in page and "<label hidden>Epoch" in page  # one bundle: no epoch to choose


def test_several_learning_rates_and_batch_sizes_make_a_sweep(with_dataset: TestClient) -> None:
    answer = with_dataset.post("/api/models", headers=CSRF, json={
        "dataset": "ds", "network": "lenet", "name": "sweep", "options": {"lr": [0.1, 0.01], "batch_size": [8, 16]}})
    assert answer.status_code == 202
    names = [m["name"] for m in answer.json()["models"]]
    assert names == ["sweep-lr0.1-bs8", "sweep-lr0.1-bs16", "sweep-lr0.01-bs8", "sweep-lr0.01-bs16"]
    assert [m["job"]["queue_position"] for m in answer.json()["models"]] == [0, 1, 2, 3]
    store = Store(with_dataset.app.state.settings.home)
    configs = [j.params["config"] for j in store.list_jobs()]
    assert [(c["lr"], c["batch_size"]) for c in configs] == [(0.1, 8), (0.1, 16), (0.01, 8), (0.01, 16)]
    repeated = with_dataset.post("/api/models", headers=CSRF, json={"dataset": "ds", "options": {"lr": [0.1, 0.1]}})
    assert repeated.status_code == 400 and "repeats a combination" in repeated.json()["detail"]


def test_training_options_are_checked_before_anything_is_queued(with_dataset: TestClient) -> None:
    cases = [
        ({"dataset": "nope"}, 404, "no dataset named 'nope'"),
        ({"dataset": "ds", "options": {"epochs": 0}}, 400, "epochs must be an int from 1 to 100000, got 0"),
        ({"dataset": "ds", "options": {"solver": "adamm"}}, 400, "solver must be one of sgd, nesterov, adam, adamw, "
                                                               "adagrad, rmsprop, adadelta, got 'adamm' (did you mean 'adam'?)"),
        ({"dataset": "ds", "options": {"epoch": 3}}, 422, "options.epoch: is not an option; did you mean 'epochs'?"),
        ({"dataset": "ds", "options": {"lr": "fast"}}, 422, "options.lr"),
        ({"dataset": "ds", "network": "/tmp/evil.py"}, 400, "a network file must be uploaded first"),
        ({"dataset": "ds", "pretrained": True, "previous": "x"}, 400, "choose one starting point"),
        ({"dataset": "ds", "weights": "missing"}, 404, "no uploaded pretrained weights named 'missing'"),
        ({"dataset": "ds", "network_file": "none.py"}, 403, "restart it with 'shoal serve --allow-code'"),
        ({"dataset": "ds", "previous": "ghost"}, 404, "no model named 'ghost'"),
        ({"dataset": "ds", "name": "bad name"}, 400, "model name 'bad name' is not allowed"),
    ]
    for body, status, message in cases:
        answer = with_dataset.post("/api/models", json=body, headers=CSRF)
        assert answer.status_code == status, body
        assert message in answer.json()["detail"], answer.json()
    assert Store(with_dataset.app.state.settings.home).list_jobs() == []


def test_non_finite_and_absurd_options_are_refused_with_a_4xx(with_dataset: TestClient) -> None:
    headers = {**CSRF, "Content-Type": "application/json"}
    cases = [
        ('{"dataset": "ds", "options": {"lr": Infinity}}', "lr must be a number > 0 and <= 10, got inf"),
        ('{"dataset": "ds", "options": {"weight_decay": Infinity}}', "weight_decay must be a number from 0 to 1, got inf"),
        ('{"dataset": "ds", "options": {"gamma": NaN}}', "gamma must be a number from 0 to 100, got nan"),
        ('{"dataset": "ds", "options": {"step_values": [NaN, -1]}}', "step_values must be epochs from 0 to 100000"),
        ('{"dataset": "ds", "options": {"seed": 100000000000000000000000}}',
         "seed must be an int from 0 to 4294967295, got 100000000000000000000000"),
    ]
    for body, message in cases:
        answer = with_dataset.post("/api/models", content=body, headers=headers)
        assert answer.status_code == 400, (body, answer.json())
        assert message in answer.json()["detail"], answer.json()
    data = with_dataset.post("/api/datasets", content='{"name": "p", "sample": true, "options": {"val_pct": Infinity}}',
                             headers=headers)
    assert data.status_code == 400 and data.json()["detail"] == "val_pct must be a number from 0 to 90, got inf"
    assert Store(with_dataset.app.state.settings.home).list_jobs() == []


def test_models_from_the_cli_appear_and_can_be_deleted(client: TestClient) -> None:
    store = Store(client.app.state.settings.home)
    store.reserve("model", "from-cli", status="done", summary={"dataset": "d", "network": "lenet", "val_accuracy": 0.5})
    (store.folder("model", "from-cli") / "config.json").write_text(json.dumps({"dataset": "d", "epochs": 3}))
    listed = client.get("/api/models").json()
    assert [(m["name"], m["status"], m["val_accuracy"]) for m in listed] == [("from-cli", "done", 0.5)]
    model = client.get("/api/models/from-cli").json()
    assert model["can_resume"] is False and model["can_abort"] is False and model["epochs"] == 3
    refused = client.post("/api/models/from-cli/abort", headers=CSRF)
    assert refused.status_code == 409 and "only queued or running models can be aborted" in refused.json()["detail"]
    refused = client.post("/api/models/from-cli/resume", headers=CSRF)
    assert refused.status_code == 409 and "only interrupted, aborted or failed" in refused.json()["detail"]
    assert client.get("/api/models/from-cli/download").json()["detail"].startswith("model 'from-cli' has not started")
    assert client.delete("/api/models/from-cli", headers=CSRF).status_code == 204
    assert client.get("/api/models").json() == []
    assert not store.folder("model", "from-cli").exists()


def test_a_restarted_server_shows_lost_runs_as_interrupted(settings: Settings) -> None:
    store = Store(settings.home)
    dead = _dead_pid()
    store.reserve("model", "lost", status="running", summary={"pid": dead, "dataset": "d"})
    (store.folder("model", "lost") / "config.json").write_text(json.dumps({"dataset": "d", "epochs": 5}))
    _resume_point(store.folder("model", "lost"), epoch=3)
    store.reserve("model", "alive", status="running", summary={"pid": os.getpid()})
    job = store.add_job("train", "gone", lane="cpu", params={})
    store.update_job(job.id, status="running", pid=dead)
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        model = c.get("/api/models/lost").json()
        assert model["status"] == "interrupted" and model["can_resume"] is True
        assert c.get("/api/models/alive").json()["status"] == "running"  # another process still trains it
        assert store.get_job(job.id).status == "interrupted"
        state = store.folder("model", "lost") / "state.pt"
        saved = state.read_bytes()
        state.write_bytes(b"cut short")  # a damaged resume point is refused at once, not in the job
        for body in ({"epochs": 6}, {}):
            damaged = c.post("/api/models/lost/resume", json=body, headers=CSRF)
            assert damaged.status_code == 409 and "its resume point" in damaged.json()["detail"]
        state.write_bytes(saved)
        resumed = c.post("/api/models/lost/resume", json={"epochs": 6}, headers=CSRF)
        assert resumed.status_code == 202 and resumed.json()["job"]["kind"] == "resume"
        assert c.get("/api/models/lost").json()["status"] == "queued"
        twice = c.post("/api/models/lost/resume", headers=CSRF)
        assert twice.status_code == 409 and "already training or queued" in twice.json()["detail"]
        bad = c.post("/api/models/lost/resume", json={"epochs": "many"}, headers=CSRF)
        assert bad.status_code == 422


def _resume_point(folder: Path, *, epoch: int) -> None:
    """A resume point of ``epoch`` validated epochs, as the training loop saves it."""
    import torch

    from shoal.models import ModelFolder
    from shoal.training import snapshots

    model = torch.nn.Linear(3, 2)
    history = [{"epoch": e, "val_accuracy": 0.5, "val_loss": 1.0} for e in range(1, epoch + 1)]
    snapshots.save_state(ModelFolder(folder), model, torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator(),
                         {"epoch": epoch, "best": 1, "history": history, "elapsed": 1.0, "stale": 0, "epochs": 5})


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- classification and downloads ---------------------------------------------------------------------------
def test_classify_returns_what_shoal_classify_json_prints(toy_client: TestClient, toy: ToyModel,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from shoal.cli import _register, app

    image = first_image(toy, "square")
    monkeypatch.chdir(image.parent)
    _register()
    printed = CliRunner().invoke(app, ["classify", str(toy.bundle), image.name, "--json"])
    assert printed.exit_code == 0, printed.output
    (expected,) = json.loads(printed.stdout)
    answer = toy_client.post(f"/api/models/{toy.name}/classify", files={"file": (image.name, image.read_bytes())},
                             headers=CSRF)
    assert answer.status_code == 200
    assert answer.json() == expected
    assert len(expected["predictions"]) == 3 and expected["source"] == image.name
    assert expected["unfamiliar"] is False and expected["unfamiliar_score"] >= 0  # a training image is familiar
    top1 = toy_client.post(f"/api/models/{toy.name}/classify", data={"top": "1"},
                           files={"file": (image.name, image.read_bytes())}, headers=CSRF).json()
    assert top1["predictions"] == expected["predictions"][:1]
    assert toy_client.post(f"/api/models/{toy.name}/classify", data={"top": "0"}, headers=CSRF,
                           files={"file": (image.name, image.read_bytes())}).status_code == 422


@pytest.fixture()
def image_server(toy: ToyModel) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = lambda *a, **k: Quiet(*a, directory=str(toy.images), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_classify_by_url(toy: ToyModel, roots: Path, image_server: str) -> None:
    # The image server is on loopback, which the server fetches only with --allow-private-urls (test_url_fetch.py).
    settings = Settings(home=toy.home, roots=(roots,), run_jobs=False, allow_private_urls=True)
    toy_client = TestClient(create_app(settings), base_url=LOCAL)
    image = first_image(toy, "triangle")
    url = f"{image_server}/triangle/{image.name}"
    by_url = toy_client.post(f"/api/models/{toy.name}/classify", data={"url": url}, headers=CSRF).json()
    by_file = shoal.load(toy.bundle).predict(image).to_dict()
    assert by_url == {**by_file, "source": url}
    missing = toy_client.post(f"/api/models/{toy.name}/classify", data={"url": f"{image_server}/nope.png"}, headers=CSRF)
    assert missing.status_code == 400 and "it could not be fetched as an image" in missing.json()["detail"]
    both = toy_client.post(f"/api/models/{toy.name}/classify", data={"url": url}, headers=CSRF,
                           files={"file": ("a.png", image.read_bytes())})
    assert both.status_code == 400 and both.json()["detail"].startswith("send one image")
    neither = toy_client.post(f"/api/models/{toy.name}/classify", headers=CSRF)
    assert neither.status_code == 400 and neither.json()["detail"].startswith("send an image")
    scheme = toy_client.post(f"/api/models/{toy.name}/classify", data={"url": "file:///etc/passwd"}, headers=CSRF)
    assert scheme.status_code == 400


def test_classify_many_reports_accuracy_against_class_folders(toy_client: TestClient, toy: ToyModel) -> None:
    answer = toy_client.post(f"/api/models/{toy.name}/classify-many", headers=CSRF,
                             files={"archive": ("set.zip", class_zip(toy, 3, prefix="set/"))})
    assert answer.status_code == 200
    out = answer.json()
    assert out["summary"]["images"] == 9 and out["summary"]["with_truth"] == 9
    rows = out["results"]
    assert {r["truth"] for r in rows} == set(toy.labels)
    expected = sum(r["predictions"][0]["label"] == r["truth"] for r in rows) / 9
    assert out["summary"]["top1_accuracy"] == pytest.approx(expected)
    assert out["summary"]["top5_accuracy"] == 1.0  # three classes: the truth is always in the top five
    assert [c["label"] for c in out["per_class"]] == sorted(toy.labels)
    assert all(c["images"] == 3 for c in out["per_class"])
    loose = toy_client.post(f"/api/models/{toy.name}/classify-many", headers=CSRF,
                            files=[("files", ("one.png", first_image(toy).read_bytes())),
                                   ("files", ("two.png", first_image(toy, "square").read_bytes()))]).json()
    assert [r["source"] for r in loose["results"]] == ["one.png", "two.png"]
    assert loose["summary"] == {"images": 2, "errors": 0, "with_truth": 0, "unfamiliar": 0} and loose["per_class"] == []
    model = shoal.load(toy.bundle)
    for row, path in zip(loose["results"], [first_image(toy), first_image(toy, "square")]):
        want = model.predict(path).to_dict()  # as 'shoal classify --json' prints it
        assert row["unfamiliar"] == want["unfamiliar"] and row["unfamiliar_score"] == pytest.approx(want["unfamiliar_score"])
    empty = toy_client.post(f"/api/models/{toy.name}/classify-many", headers=CSRF)
    assert empty.status_code == 400 and empty.json()["detail"].startswith("no images to classify")


def test_classify_a_server_side_list_of_images(toy_client: TestClient, toy: ToyModel, roots: Path) -> None:
    (roots / "imgs").mkdir()
    a, b, c = first_image(toy, "circle"), first_image(toy, "square"), first_image(toy, "triangle")
    for source, name in ((a, "a.png"), (b, "b.png"), (c, "c d.png")):
        (roots / "imgs" / name).write_bytes(source.read_bytes())
    listing = roots / "list.txt"
    listing.write_text(f"imgs/a.png circle\nimgs/b.png {toy.labels.index('square')}\nimgs/c d.png\n"
                       f"imgs/gone.png circle\n{a} circle\n")
    answer = toy_client.post(f"/api/models/{toy.name}/classify-list", json={"list_file": "list.txt", "top": 2},
                             headers=CSRF)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["list_file"] == str(listing)
    rows = out["results"]
    assert [(r["source"], r["truth"]) for r in rows] == [
        (str(roots / "imgs" / "a.png"), "circle"), (str(roots / "imgs" / "b.png"), "square"),  # an index, as DIGITS
        (str(roots / "imgs" / "c d.png"), None), (str(roots / "imgs" / "gone.png"), None), (str(a), None)]
    model = shoal.load(toy.bundle)
    for row, path in zip(rows[:3], (a, b, c)):
        assert row["error"] is None and len(row["predictions"]) == 2
        assert row["predictions"][0]["label"] == model.predict(path).label
    assert rows[3]["error"] == "file not found (line 4 of list.txt)" and rows[3]["predictions"] == []
    assert rows[4]["error"].startswith("outside the folders this server may read")  # as a dataset build refuses it
    assert out["summary"]["images"] == 5 and out["summary"]["errors"] == 2 and out["summary"]["with_truth"] == 2
    outside = toy_client.post(f"/api/models/{toy.name}/classify-list", json={"list_file": str(toy.images)},
                              headers=CSRF)
    assert outside.status_code == 400 and "is outside the folders this server may read" in outside.json()["detail"]
    (roots / "folder").mkdir()
    folder = toy_client.post(f"/api/models/{toy.name}/classify-list", json={"list_file": "folder"}, headers=CSRF)
    assert folder.status_code == 400 and "is not a regular file" in folder.json()["detail"]


def test_a_dataset_image_opens_at_full_size_with_its_source(toy: ToyModel, roots: Path) -> None:
    base = f"/api/datasets/{toy.dataset}/images/train/0"
    with TestClient(create_app(Settings(home=toy.home, roots=(roots,), run_jobs=False)), base_url=LOCAL) as c:
        info = c.get(base).json()
        source = Path(info["source"])
        assert source.is_relative_to(toy.images) and source.parent.name == info["label"]
        assert info["stored_size"] == [32, 32]
        assert info["original"] is False and "is outside the folders this server may read" in info["original_reason"]
        refused = c.get(base + "/source.png")
        assert refused.status_code == 400 and "is outside the folders this server may read" in refused.json()["detail"]
        assert c.get(f"/api/datasets/{toy.dataset}/images/train/100000").status_code == 400
    with TestClient(create_app(Settings(home=toy.home, roots=(toy.images,), run_jobs=False)), base_url=LOCAL) as c:
        assert c.get(base).json()["original"] is True
        full = c.get(base + "/source.png")
        assert full.status_code == 200 and full.headers["content-type"] == "image/png"
        with Image.open(source) as original:
            assert Image.open(io.BytesIO(full.content)).size == original.size != (32, 32)
        assert c.get(f"/api/datasets/{toy.dataset}/images/train/0.png").status_code == 200  # the stored one still


def test_without_a_detector_every_prediction_says_why_the_verdict_is_unknown(toy: ToyModel, roots: Path,
                                                                             tmp_path: Path) -> None:
    import shutil

    home = shutil.copytree(toy.home, tmp_path / "home")
    manifest_path = home / "models" / toy.name / "bundle" / "shoal.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["unfamiliar"]  # a bundle written before shoal had the verdict
    manifest_path.write_text(json.dumps(manifest))
    image = first_image(toy)
    reason = ("the model cannot tell: its bundle was written before shoal had the verdict; re-export it "
              "(shoal export MODEL --out ...)")
    with TestClient(create_app(Settings(home=home, roots=(roots,), run_jobs=False)), base_url=LOCAL) as c:
        one = c.post(f"/api/models/{toy.name}/classify", files={"file": (image.name, image.read_bytes())}, headers=CSRF)
        assert one.json() == {**shoal.load(manifest_path.parent).predict(image).to_dict(), "source": image.name}
        assert one.json()["unfamiliar"] is None and one.json()["unfamiliar_reason"] == reason
        many = c.post(f"/api/models/{toy.name}/classify-many", headers=CSRF,
                      files=[("files", (image.name, image.read_bytes()))]).json()
        assert many["summary"]["unfamiliar"] is None and many["summary"]["unfamiliar_reason"] == reason
        assert many["results"][0]["unfamiliar_reason"] == reason
        ev = c.get(f"/api/models/{toy.name}/evaluation").json()
        assert ev["unfamiliar_count"] is None and ev["unfamiliar_rate"] is None and ev["unfamiliar_reason"] == reason


def test_a_model_without_a_bundle_cannot_classify(client: TestClient) -> None:
    store = Store(client.app.state.settings.home)
    store.reserve("model", "half", status="running", summary={"pid": os.getpid()})
    answer = client.post("/api/models/half/classify", files={"file": ("a.png", png_bytes())}, headers=CSRF)
    assert answer.status_code == 409
    assert answer.json()["detail"].startswith("model 'half' has no bundle yet (status running)")


def test_the_downloaded_bundle_loads_with_shoal_load(toy_client: TestClient, toy: ToyModel, tmp_path: Path) -> None:
    answer = toy_client.get(f"/api/models/{toy.name}/download")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == f'attachment; filename="{toy.name}.shoal"'
    path = tmp_path / "model.shoal"
    path.write_bytes(answer.content)
    image = first_image(toy)
    assert shoal.load(path).predict(image).to_dict() == shoal.load(toy.bundle).predict(image).to_dict()
    missing = toy_client.get(f"/api/models/{toy.name}/download", params={"epoch": "999"})
    assert missing.status_code == 404 and "has no snapshot of epoch '999'" in missing.json()["detail"]


# -- networks, pretrained weights, schedule ---------------------------------------------------------------
def test_network_files_are_checked_and_kept(settings: Settings) -> None:
    client = TestClient(create_app(settings.replace(allow_code=True)), base_url=LOCAL)  # see test_server_security
    good = b"import torch\n\ndef create_network(num_classes, channels):\n    return torch.nn.Linear(3, num_classes)\n"
    answer = client.post("/api/networks/files", files={"file": ("my net.py", good)}, headers=CSRF)
    assert answer.status_code == 201 and answer.json()["file"] == "my_net.py"
    assert client.get("/api/networks").json()["files"][0]["file"] == "my_net.py"
    cases = [
        ("net.txt", good, "must be a Python file ending in .py"),
        ("bad.py", b"def create_network(:\n", "'bad.py' is not valid Python"),
        ("other.py", b"def build():\n    pass\n", "defines no 'create_network(num_classes, channels)' function"),
    ]
    for name, data, message in cases:
        answer = client.post("/api/networks/files", files={"file": (name, data)}, headers=CSRF)
        assert answer.status_code == 400 and message in answer.json()["detail"], answer.json()


def test_pretrained_weights_upload_is_read_without_unpickling(client: TestClient, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from shoal import networks

    state = networks.create("lenet", 4, channels=3).state_dict()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    answer = client.post("/api/pretrained", headers=CSRF, data={"name": "mine", "architecture": "lenet",
                                                                "labels": "a\nb\n\nc\nd"},
                         files={"file": ("w.safetensors", weights.read_bytes())})
    assert answer.status_code == 201, answer.text
    info = answer.json()
    assert info["labels"] == ["a", "b", "c", "d"] and info["tensors"] == len(state)
    assert [p["name"] for p in client.get("/api/pretrained").json()] == ["mine"]
    # A .pth holding a Python object is refused, not unpickled.
    evil = tmp_path / "evil.pth"
    torch.save({"model": Path("/tmp")}, evil)
    answer = client.post("/api/pretrained", headers=CSRF, data={"name": "evil", "architecture": "lenet"},
                         files={"file": ("evil.pth", evil.read_bytes())})
    assert answer.status_code == 400 and "does not unpickle" in answer.json()["detail"]
    answer = client.post("/api/pretrained", headers=CSRF, data={"name": "x", "architecture": "lenet"},
                         files={"file": ("w.txt", b"abc")})
    assert answer.status_code == 400 and "must be a .safetensors, .pth or .pt file" in answer.json()["detail"]
    answer = client.post("/api/pretrained", headers=CSRF, data={"name": "y", "architecture": "lenett"},
                         files={"file": ("w.safetensors", weights.read_bytes())})
    assert answer.status_code == 400 and "lenet" in answer.json()["detail"]
    again = client.post("/api/pretrained", headers=CSRF, data={"name": "mine", "architecture": "lenet"},
                        files={"file": ("w.safetensors", weights.read_bytes())})
    assert again.status_code == 409
    assert client.delete("/api/pretrained/mine", headers=CSRF).status_code == 204
    assert client.get("/api/pretrained").json() == []
    assert list((client.app.state.settings.home / "uploads").iterdir()) == []


def test_the_schedule_preview_follows_the_policy(client: TestClient) -> None:
    from shoal.training import learning_rate

    answer = client.get("/api/schedule", params={"policy": "step", "epochs": 30, "lr": 0.1, "step_size": 10,
                                                 "gamma": 0.5})
    assert answer.status_code == 200
    points = answer.json()["points"]
    assert points[0] == {"epoch": 0.0, "lr": 0.1} and points[-1]["epoch"] == 30
    for p in points[::37]:
        assert p["lr"] == pytest.approx(learning_rate("step", p["epoch"], epochs=30, base_lr=0.1, step_size=10,
                                                      gamma=0.5))
    multistep = client.get("/api/schedule", params={"policy": "multistep", "epochs": 10, "step_values": "2, 6"}).json()
    assert {round(p["lr"], 6) for p in multistep["points"]} == {0.01, 0.001, 0.0001}
    bad = client.get("/api/schedule", params={"policy": "cosin"})
    assert bad.status_code == 400 and "(did you mean 'cosine'?)" in bad.json()["detail"]
    assert client.get("/api/schedule", params={"epochs": 0}).status_code == 422
    assert client.get("/api/schedule", params={"step_values": "a,b"}).status_code == 400
    assert len(client.get("/api/schedule", params={"epochs": 100000}).json()["points"]) == 2001


def test_settings_and_store_are_dependencies_tests_can_override(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path / "a", run_jobs=False))
    other = Store(tmp_path / "b")
    other.reserve("model", "elsewhere", status="done")
    app.dependency_overrides[get_store] = lambda: other
    with TestClient(app, base_url=LOCAL) as c:
        assert [m["name"] for m in c.get("/api/models").json()] == ["elsewhere"]
    overridden = Settings(home=tmp_path / "c", run_jobs=False)
    app = create_app(Settings(home=tmp_path / "a", run_jobs=False))
    app.dependency_overrides[get_settings] = lambda: overridden
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/api/models").json() == []
        assert (tmp_path / "c" / "index.sqlite").exists()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("SHOAL_TOKEN", "environment-token")
    monkeypatch.setenv("SHOAL_ROOTS", os.pathsep.join([str(tmp_path), str(tmp_path)]))
    monkeypatch.setenv("SHOAL_MAX_IMAGE_MB", "1.5")
    settings = Settings.from_env()
    assert settings.home == tmp_path / "env-home" and settings.token == "environment-token"
    assert settings.roots == (tmp_path.resolve(), tmp_path.resolve())
    assert settings.max_image_bytes == int(1.5 * 1024 * 1024)
    monkeypatch.setenv("SHOAL_MAX_ZIP_MB", "lots")
    with pytest.raises(ConfigError, match="SHOAL_MAX_ZIP_MB must be a number of megabytes, got 'lots'"):
        Settings.from_env()
    with pytest.raises(ConfigError, match="is not a folder"):
        Settings(home=tmp_path, roots=(tmp_path / "missing",))


def test_shoal_serve_refuses_a_public_host_without_a_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shoal.cli import _register, app

    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("SHOAL_TOKEN", raising=False)
    _register()
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "needs an access token: pass --token TOKEN or set SHOAL_TOKEN" in result.output
    help_text = CliRunner().invoke(app, ["serve", "--help"]).output
    assert "--roots" in help_text and "--token" in help_text


def test_a_page_for_a_failed_build_shows_its_error(client: TestClient) -> None:
    store = Store(client.app.state.settings.home)
    job = store.add_job("dataset", "broken", lane="data", params={})
    store.update_job(job.id, status="failed", error="'photos/' has 1 class folder ('cats'); need at least 2")
    page = client.get("/datasets/broken")
    assert page.status_code == 200 and "need at least 2" in page.text
    client.cookies.clear()
    listed = client.get("/api/datasets").json()
    assert listed[0]["status"] == "failed" and "need at least 2" in listed[0]["error"]
    assert client.delete("/api/datasets/broken", headers=CSRF).status_code == 204
    assert client.get("/api/datasets").json() == []



def test_evaluation_scores_the_model_on_its_validation_split(toy_client: TestClient, toy: ToyModel) -> None:
    from shoal.evaluate import evaluate

    answer = toy_client.get(f"/api/models/{toy.name}/evaluation", params={"split": "val", "per_class": 2})
    assert answer.status_code == 200
    ev = answer.json()
    expected = evaluate(toy.bundle, dataset=toy.dataset, split="val", store=Store(toy.home))
    assert ev["accuracy"] == pytest.approx(expected.accuracy) and ev["images"] == expected.count
    assert ev["confusion_matrix"] == expected.confusion and ev["labels"] == list(toy.labels)
    assert [c["label"] for c in ev["per_class"]] == list(toy.labels)
    assert len(ev["confidently_wrong"]) == len(expected.wrong)
    assert ev["dataset"] == toy.dataset and ev["on"] == f"dataset {toy.dataset!r} (val), the one it was trained on"
    assert ev["log_loss"] == pytest.approx(expected.log_loss) and ev["calibration"] == expected.calibration.to_dict()
    assert set(ev["most_confident"]) == set(toy.labels)
    assert all(item["predicted"] == label for label, items in ev["most_confident"].items() for item in items)
    assert [[i["source"] for i in v] for v in ev["most_confident"].values()] == [
        [os.path.basename(j.source) for j in v[:2]] for v in expected.top_per_class.values()]
    thumb = next(v for v in ev["most_confident"].values() if v)[0]["image"]
    assert thumb.startswith("data:image/png;base64,")
    assert ev["unfamiliar_rate"] == expected.unfamiliar_rate and ev["unfamiliar_count"] == expected.unfamiliar_count
    assert [c["unfamiliar"] for c in ev["per_class"]] == [c["unfamiliar"] for c in expected.per_class]
    assert [i["source"] for i in ev["unfamiliar"]] == [os.path.basename(j.source) for j in expected.unfamiliar]
    assert all(i["unfamiliar"] is False for v in ev["most_confident"].values() for i in v if i["unfamiliar"] is not True)
    bad = toy_client.get(f"/api/models/{toy.name}/evaluation", params={"split": "test"})
    assert bad.status_code == 400 and "has no test images" in bad.json()["detail"]
    assert toy_client.get(f"/api/models/{toy.name}/evaluation", params={"split": "dev"}).status_code == 400


@pytest.mark.slow
def test_heatmap_shows_where_the_network_looked(toy_client: TestClient, toy: ToyModel) -> None:
    image = first_image(toy, "circle")
    answer = toy_client.post(f"/api/models/{toy.name}/heatmap", files={"file": (image.name, image.read_bytes())},
                             headers=CSRF)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    expected = shoal.load(toy.bundle).predict(image, top=1)
    assert answer.headers["x-shoal-label"] == expected.label
    assert float(answer.headers["x-shoal-probability"]) == pytest.approx(expected.probability, abs=1e-4)
    overlay = Image.open(io.BytesIO(answer.content))
    assert min(overlay.size) >= 224  # LeNet's 28 px input, enlarged to be seen
    target = toy_client.post(f"/api/models/{toy.name}/heatmap", data={"target": "square"}, headers=CSRF,
                             files={"file": (image.name, image.read_bytes())})
    assert target.headers["x-shoal-label"] == "square"
    bad = toy_client.post(f"/api/models/{toy.name}/heatmap", data={"target": "dog"}, headers=CSRF,
                          files={"file": (image.name, image.read_bytes())})
    assert bad.status_code == 400 and "target must be one of the model's classes" in bad.json()["detail"]
    notimage = toy_client.post(f"/api/models/{toy.name}/heatmap", files={"file": ("x.png", b"text")}, headers=CSRF)
    assert notimage.status_code == 400 and notimage.json()["detail"].startswith("cannot read image x.png")


@pytest.mark.slow
def test_layers_show_what_classify_layers_computes(toy_client: TestClient, toy: ToyModel) -> None:
    import base64

    image = first_image(toy, "square")
    answer = toy_client.post(f"/api/models/{toy.name}/layers", files={"file": (image.name, image.read_bytes())},
                             headers=CSRF)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    expected = shoal.load(toy.bundle).layers(image)  # what 'shoal classify --layers' writes
    assert found["source"] == image.name and found["architecture"] == expected.architecture
    assert found["total_parameters"] == expected.total_parameters and found["first_conv"] == expected.first_conv
    assert [p["label"] for p in found["predictions"]] == [label for label, _ in expected.predictions]
    assert [(l["name"], l["kind"], l["shape"], l["histogram"], l["parameters"]) for l in found["layers"]] == [
        (l.name, l.kind, l.shape, l.histogram, l.parameters) for l in expected.layers]
    assert [l["mean"] for l in found["layers"]] == pytest.approx([l.mean for l in expected.layers], abs=1e-5)

    def png(uri: str) -> Image.Image:
        assert uri.startswith("data:image/png;base64,")
        return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))

    assert png(found["first_conv_weights"]).size == Image.open(io.BytesIO(expected.first_conv_weights)).size
    spatial = [l for l in found["layers"] if len(l["shape"]) == 4]
    assert spatial and all(png(l["image"]).width >= 96 for l in spatial)
    assert all(l["image"] is None for l in found["layers"] if len(l["shape"]) != 4)
    both = toy_client.post(f"/api/models/{toy.name}/layers", data={"url": "https://example.com/a.png"}, headers=CSRF,
                           files={"file": (image.name, image.read_bytes())})
    assert both.status_code == 400 and both.json()["detail"].startswith("send one image")
    notimage = toy_client.post(f"/api/models/{toy.name}/layers", files={"file": ("x.png", b"text")}, headers=CSRF)
    assert notimage.status_code == 400 and notimage.json()["detail"].startswith("cannot read image x.png")
    missing = toy_client.post("/api/models/nobody/layers", files={"file": (image.name, image.read_bytes())},
                              headers=CSRF)
    assert missing.status_code == 404


def test_the_job_queue_lives_in_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = store.add_job("train", "a", lane="cpu", params={"config": {"epochs": 2}})
    second = store.add_job("dataset", "b", lane="data")
    assert (first.status, first.params, first.progress, first.pid) == ("queued", {"config": {"epochs": 2}}, {}, None)
    assert [j.id for j in store.list_jobs(status="queued", lane="cpu")] == [first.id]
    store.update_job(first.id, status="running", pid=123, progress={"epoch": 1})
    store.update_job(first.id, progress={"train_loss": 0.5})
    assert store.get_job(first.id).progress == {"epoch": 1, "train_loss": 0.5}
    # Compare-and-set: a finished job is not changed by a late "failed".
    store.update_job(first.id, status="aborted")
    assert store.update_job(first.id, status="failed", only_if=("running",)).status == "aborted"
    assert [j.target for j in store.list_jobs(limit=1)] == ["b"]
    assert [j.target for j in store.list_jobs(kind=("train", "dataset"))] == ["a", "b"]
    store.forget_jobs("a", ("train",))
    store.forget_jobs("b", ("dataset",))  # still queued: kept
    assert [j.id for j in store.list_jobs()] == [second.id]
    with pytest.raises(ConfigError, match="status must be one of"):
        store.update_job(second.id, status="paused")
    with pytest.raises(KeyError, match="no job 999"):
        store.get_job(999)
