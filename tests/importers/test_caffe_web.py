"""The web app's "Import a model" page (issue 10): an uploaded archive under the dataset uploads' guards,
then a training from the imported model ("A previous model")."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))
from test_caffe_finetune import _caffe_net  # noqa: E402

from shoal.server.app import create_app  # noqa: E402
from shoal.server.config import Settings  # noqa: E402
from shoal.store import Store  # noqa: E402

CSRF = {"X-Shoal-CSRF": "1"}
LOCAL = "http://127.0.0.1"


@pytest.fixture()
def client(tmp_path: Path, tiny_dataset) -> TestClient:
    with TestClient(create_app(Settings(home=Store().home, run_jobs=False)), base_url=LOCAL) as c:
        yield c


def _tar_gz(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for path in sorted(folder.iterdir()):
            tf.add(path, arcname=f"job/{path.name}")
    return buffer.getvalue()


def test_import_page_and_a_good_archive(client: TestClient, tmp_path: Path) -> None:
    folder = _caffe_net(tmp_path / "caffe").parent
    answer = client.post("/api/models/import", headers=CSRF, data={"name": "web-caffe", "mean": "104,117,123"},
                         files={"file": ("model.tar.gz", _tar_gz(folder), "application/gzip")})
    assert answer.status_code == 201, answer.text
    done = answer.json()
    assert done["name"] == "web-caffe" and done["url"] == "/models/web-caffe" and len(done["labels"]) == 5
    assert done["input"] == {"size": [32, 32], "channels": 3} and done["onnx_diff"] <= 1e-4
    assert client.get("/api/models/web-caffe").json()["status"] == "done"
    # The same archive as a zip, and the name taken: refused in one line.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in folder.iterdir():
            zf.write(path, path.name)
    again = client.post("/api/models/import", headers=CSRF, data={"name": "web-caffe"},
                        files={"file": ("m.zip", buffer.getvalue(), "application/zip")})
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    zipped = client.post("/api/models/import", headers=CSRF, data={"name": "web-caffe-zip", "mean": "none"},
                         files={"file": ("m.zip", buffer.getvalue(), "application/zip")})
    assert zipped.status_code == 201, zipped.text

    # "A previous model": the imported model starts a training with its layers: network and its weights.
    queued = client.post("/api/models", headers=CSRF, json={"dataset": "tiny", "previous": "web-caffe",
                                                             "name": "from-caffe"})
    assert queued.status_code == 202, queued.text
    config = client.get("/api/models/from-caffe").json()["config"]
    assert config["network"].startswith("layers:") and '"name":"tiny-caffe"' in config["network"]
    assert config["pretrained"].endswith("web-caffe/bundle/model.safetensors")
    refused = client.post("/api/models", headers=CSRF, json={"dataset": "tiny", "previous": "web-caffe",
                                                              "network": "lenet", "name": "x"})
    assert refused.status_code == 400 and "drop --network" in refused.json()["detail"]
    page = client.get("/models/import")  # last: the page sets the browser's CSRF cookie
    assert page.status_code == 200 and 'id="import-form"' in page.text and "/static/import.js" in page.text


@pytest.mark.parametrize("member", ["../evil.prototxt", "/etc/evil.prototxt"])
def test_unsafe_archives_are_refused(client: TestClient, member: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        info = tarfile.TarInfo(member)
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    answer = client.post("/api/models/import", headers=CSRF, data={"name": "evil"},
                         files={"file": ("m.tar.gz", buffer.getvalue(), "application/gzip")})
    assert answer.status_code == 400 and "unsafe path" in answer.json()["detail"]
    assert not Store().exists("model", "evil")


def test_links_and_other_files_are_refused(client: TestClient) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        info = tarfile.TarInfo("deploy.prototxt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    answer = client.post("/api/models/import", headers=CSRF, data={"name": "evil"},
                         files={"file": ("m.tar.gz", buffer.getvalue(), "application/gzip")})
    assert answer.status_code == 400 and "link or special file" in answer.json()["detail"]
    text = client.post("/api/models/import", headers=CSRF, data={"name": "evil"},
                       files={"file": ("m.tar.gz", b"just text", "text/plain")})
    assert text.status_code == 400 and "neither a zip nor a tar.gz" in text.json()["detail"]


def test_the_upload_limit_applies(tmp_path: Path, tiny_dataset) -> None:
    settings = Settings(home=Store().home, run_jobs=False, max_zip_bytes=1024)
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        answer = c.post("/api/models/import", headers=CSRF, data={"name": "big"},
                        files={"file": ("m.tar.gz", b"\x1f\x8b" + b"0" * 4096, "application/gzip")})
    assert answer.status_code == 413 and json.dumps(answer.json())
