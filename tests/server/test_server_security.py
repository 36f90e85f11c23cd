"""The web app against a page of another site: host names, origins, and code only with ``--allow-code``.

Each test plays an attack that once worked: a DNS-rebinding request (a foreign ``Host``),
a cross-origin POST, the upload of a network file and a training or heat-map that would
import one. Network files leave a marker file when they are imported, so a test can see
whether code ran, not only what the server answered.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference_fixtures import ToyModel
from shoal.errors import ConfigError
from shoal.server import Settings, create_app
from shoal.store import Store
from test_trust import an_image, code_bundle

CSRF = {"X-Shoal-CSRF": "1"}
LOCAL = "http://127.0.0.1:5000"
NETWORK = b"import torch\n\ndef create_network(num_classes, channels):\n    return torch.nn.Linear(3, num_classes)\n"


def make_client(tmp_path: Path, base_url: str = LOCAL, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(home=tmp_path / "home", run_jobs=False, **settings)), base_url=base_url)


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


# -- hosts ---------------------------------------------------------------------------------------------
def test_a_dns_rebinding_request_with_a_foreign_host_is_refused(tmp_path: Path) -> None:
    with make_client(tmp_path, base_url="http://evil.example:5000") as rebound:
        for method, url in (("GET", "/"), ("GET", "/api/models"), ("POST", "/api/datasets")):
            answer = rebound.request(method, url, headers=CSRF, json={"name": "x", "sample": True})
            assert answer.status_code == 400, (method, url)
            detail = answer.json()["detail"]
            assert "does not answer to the host name 'evil.example:5000'" in detail
            assert "'shoal serve --allowed-host evil.example'" in detail
        assert Store(tmp_path / "home").list_jobs() == []  # nothing was queued


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost:5000", "LOCALHOST.", "[::1]:5000", "localhost"])
def test_loopback_names_are_answered(client: TestClient, host: str) -> None:
    assert client.get("/api/models", headers={"Host": host}).status_code == 200


def test_the_listening_host_and_allowed_hosts_are_answered(tmp_path: Path) -> None:
    token = {"Authorization": "Bearer long-enough-token"}
    with make_client(tmp_path, host="192.0.2.7", token="long-enough-token",
                     allowed_hosts=("shoal.lab.example", "[2001:db8::1]")) as c:
        for host in ("192.0.2.7:5000", "shoal.lab.example", "Shoal.Lab.Example:5000", "[2001:db8::1]:5000"):
            assert c.get("/api/models", headers={**token, "Host": host}).status_code == 200, host
        assert c.get("/api/models", headers={**token, "Host": "other.example"}).status_code == 400
    with make_client(tmp_path, host="0.0.0.0", token="long-enough-token") as c:  # a wildcard is no name
        assert c.get("/api/models", headers={**token, "Host": "0.0.0.0:5000"}).status_code == 400
    with make_client(tmp_path, host="0.0.0.0", token="long-enough-token", allowed_hosts=("*",)) as c:
        assert c.get("/api/models", headers={**token, "Host": "anything.example"}).status_code == 200


def test_allowed_hosts_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--allowed-host 'https://x.example/' is not a host name: give the bare name"):
        Settings(home=tmp_path, allowed_hosts=("https://x.example/",))
    with pytest.raises(ConfigError, match="--allowed-host 'x.example:80' is not a host name"):
        Settings(home=tmp_path, allowed_hosts=("x.example:80",))
    with pytest.raises(ConfigError, match="--host 'a/b' is not a host name"):
        Settings(home=tmp_path, host="a/b", token="long-enough-token")
    with pytest.raises(ConfigError, match=r"--allowed-host '\*' answers any host name.*needs an access token"):
        Settings(home=tmp_path, allowed_hosts=("*",))


# -- origins -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["http://evil.example", "http://evil.example:5000", "null",
                                    "http://127.0.0.1:8080", "ftp://127.0.0.1:5000"])
def test_a_cross_origin_post_is_refused(client: TestClient, origin: str) -> None:
    answer = client.post("/api/datasets", json={"name": "x", "sample": True}, headers={**CSRF, "Origin": origin})
    assert answer.status_code == 403
    assert answer.json()["detail"].startswith(f"cross-site request refused: it comes from a page at {origin!r}")
    assert client.delete("/api/models/x", headers={**CSRF, "Origin": origin}).status_code == 403
    assert Store(client.app.state.settings.home).list_jobs() == []


@pytest.mark.parametrize("origin", ["http://127.0.0.1:5000", "http://localhost:5000", "http://[::1]:5000"])
def test_the_servers_own_pages_may_post(client: TestClient, origin: str) -> None:
    answer = client.post("/api/datasets", json={"name": "x", "sample": True}, headers={**CSRF, "Origin": origin})
    assert answer.status_code == 202, answer.text
    # Reading from another origin is not refused here (the browser keeps the answer from that page).
    assert client.get("/api/models", headers={"Origin": "http://evil.example"}).status_code == 200


# -- code ----------------------------------------------------------------------------------------------
def test_network_file_uploads_need_allow_code(tmp_path: Path) -> None:
    Store(tmp_path / "home").reserve("dataset", "d", status="done", summary={"classes": ["a", "b"]})  # the form needs one
    with make_client(tmp_path) as c:
        refused = c.post("/api/networks/files", files={"file": ("net.py", NETWORK)}, headers=CSRF)
        assert refused.status_code == 403
        assert "restart it with 'shoal serve --allow-code'" in refused.json()["detail"]
        assert c.get("/api/networks").json()["files"] == []
        assert not (tmp_path / "home" / "networks").exists()
        page = c.get("/pretrained").text
        assert 'id="allow-code-hint"' in page and 'id="net-file"' not in page
        form = c.get("/models/new").text
        assert 'id="f-network"' in form and "__upload__" not in form and "shoal serve --allow-code" in form
    with make_client(tmp_path, allow_code=True) as c:
        accepted = c.post("/api/networks/files", files={"file": ("net.py", NETWORK)}, headers=CSRF)
        assert accepted.status_code == 201 and accepted.json()["file"] == "net.py"
        assert [f["file"] for f in c.get("/api/networks").json()["files"]] == ["net.py"]
        assert 'id="net-file"' in c.get("/pretrained").text and "__upload__" in c.get("/models/new").text


def test_training_with_a_network_file_needs_allow_code(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    store.reserve("dataset", "d", status="done")
    (tmp_path / "home" / "networks").mkdir(parents=True)
    (tmp_path / "home" / "networks" / "net.py").write_bytes(NETWORK)  # left by an earlier --allow-code server
    store.reserve("model", "old", status="done")
    (store.folder("model", "old") / "config.json").write_text('{"network": "file:/somewhere/net.py"}')
    (store.folder("model", "old") / "best.safetensors").write_bytes(b"weights")
    with make_client(tmp_path) as c:
        for body in ({"dataset": "d", "network_file": "net.py"},
                     {"dataset": "d", "previous": "old"}):  # 'auto' takes the previous model's network file
            answer = c.post("/api/models", json=body, headers=CSRF)
            assert answer.status_code == 403, body
            assert "'shoal serve --allow-code'" in answer.json()["detail"]
        weights = c.post("/api/pretrained", data={"name": "w", "architecture": "file:/somewhere/net.py"},
                         files={"file": ("w.safetensors", b"x")}, headers=CSRF)
        assert weights.status_code == 403 and "--allow-code" in weights.json()["detail"]
        # Resuming it or exporting one of its epochs rebuilds the network too.
        (store.folder("model", "old") / "model.json").write_text("{}")
        (store.folder("model", "old") / "state.pt").write_bytes(b"state")
        resumed = c.post("/api/models/old/resume", headers=CSRF)
        assert resumed.status_code == 403 and "resuming model 'old'" in resumed.json()["detail"]
        exported = c.post("/api/models/old/export", params={"epoch": "last"}, headers=CSRF)
        assert exported.status_code == 403 and "exporting model 'old'" in exported.json()["detail"]
        assert store.list_jobs() == []


@pytest.mark.slow
def test_heatmaps_and_layers_of_a_network_file_model_need_allow_code(rgb: ToyModel, tmp_path: Path) -> None:
    bundle, marker = code_bundle(rgb, tmp_path)
    image = an_image(rgb).read_bytes()
    for allow_code, status in ((False, 403), (True, 200)):
        home = tmp_path / f"home-{allow_code}"
        store = Store(home)
        store.reserve("model", "coded", status="done")
        shutil.copytree(bundle, store.folder("model", "coded") / "bundle")
        with TestClient(create_app(Settings(home=home, run_jobs=False, allow_code=allow_code)), base_url=LOCAL) as c:
            classified = c.post("/api/models/coded/classify", files={"file": ("a.png", image)}, headers=CSRF)
            assert classified.status_code == 200  # ONNX: no code needed
            layers = c.post("/api/models/coded/layers", files={"file": ("a.png", image)}, headers=CSRF)
            assert layers.status_code == status, layers.text
            assert marker.exists() == allow_code
            answer = c.post("/api/models/coded/heatmap", files={"file": ("a.png", image)}, headers=CSRF)
            assert answer.status_code == status, answer.text
            if not allow_code:
                assert "the layers of model 'coded'" in layers.json()["detail"]
                assert "a heat-map of model 'coded'" in answer.json()["detail"]
                assert "'shoal serve --allow-code'" in answer.json()["detail"]
