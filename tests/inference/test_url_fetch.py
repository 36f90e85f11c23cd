"""Classify-by-URL is no way into the server's network (issue 14, item 6: blind SSRF).

Name resolution is faked (``socket.getaddrinfo``) and so is the connection layer
(``sources._open_socket``): a test says what a name resolves to, and every connection, to
whatever address the fetcher chose, is recorded and then made to a small HTTP server on
127.0.0.1. No test contacts an address outside loopback.
"""

from __future__ import annotations

import http.server
import io
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inference_fixtures import ToyModel
from shoal.errors import InputError
from shoal.inference import sources
from shoal.inference.sources import download, is_public_address
from shoal.server import Settings, create_app

PUBLIC = "93.184.216.34"  # what the fake resolver gives public names (never connected to: see _open_socket)
CSRF = {"X-Shoal-CSRF": "1"}


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class Site(http.server.BaseHTTPRequestHandler):
    """``/img.png`` an image; ``/to?u=URL`` redirects there; ``/page`` HTML; ``/gone`` 404; ``/host`` echoes Host."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.startswith("/to?u="):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to?u="):])
            self.end_headers()
            return
        body, kind, code = {"/img.png": (png(), "image/png", 200), "/page": (b"<html></html>", "text/html", 200),
                            "/host": (self.headers.get("Host", "").encode(), "image/png", 200)
                            }.get(self.path, (b"no", "text/plain", 404))
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def site() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    thread.join()


class Net:
    """The fake network: names → addresses, and a log of lookups and connections."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, port: int) -> None:
        self.names: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        self.connections: list[tuple[str, int]] = []
        self.refuse = False
        def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[tuple]:
            self.lookups.append(host)
            try:
                ipaddress.ip_address(host)
                answers = [host]
            except ValueError:
                if host not in self.names:
                    raise socket.gaierror(-2, "Name or service not known") from None
                answers = self.names[host]
                if len(answers) > 1 and host.startswith("rebind"):  # a different answer on each lookup
                    answers = [answers[(self.lookups.count(host) - 1) % len(answers)]]
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in answers]

        def open_socket(address: str, port_: int, timeout: float) -> socket.socket:
            self.connections.append((address, port_))
            if self.refuse:
                raise ConnectionRefusedError(111, "Connection refused")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # whatever was asked, loopback answers
            sock.settimeout(timeout)
            sock.connect(("127.0.0.1", port))
            return sock

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(sources, "_open_socket", open_socket)


@pytest.fixture()
def net(monkeypatch: pytest.MonkeyPatch, site: int) -> Net:
    fake = Net(monkeypatch, site)
    fake.names.update({"images.example": [PUBLIC], "intranet.example": ["10.1.2.3"],
                       "metadata.example": ["169.254.169.254"], "mixed.example": [PUBLIC, "127.0.0.1"],
                       "rebind.example": [PUBLIC, "127.0.0.1"]})
    return fake


def refused(url: str, **kwargs: object) -> str:
    with pytest.raises(InputError) as caught:
        download(url, allow_private=False, explain=False, **kwargs)
    return str(caught.value)


def generic(url: str) -> str:
    return sources.unfetchable(url, sources.MAX_DOWNLOAD_BYTES)


# -- addresses -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "255.255.255.255", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
])
def test_non_public_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


# -- the fetcher -------------------------------------------------------------------------------------------
def test_a_public_name_is_resolved_once_and_the_checked_address_connected_to(net: Net) -> None:
    assert download("http://images.example/img.png", allow_private=False, explain=False) == png()
    assert net.lookups == ["images.example"]
    assert net.connections == [(PUBLIC, 80)]
    # The server is asked for the name that was given (Host), not the address.
    assert download("http://images.example:8080/host", allow_private=False) == b"images.example:8080"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/img.png", "http://localhost.example/img.png", "http://[::1]/img.png", "http://10.0.0.1/img.png",
    "http://intranet.example/img.png", "http://metadata.example/latest/meta-data/", "http://mixed.example/img.png",
    "http://[::ffff:127.0.0.1]/img.png", "http://0.0.0.0/img.png", "http://2130706433/img.png",
])
def test_non_public_addresses_are_refused_before_connecting(net: Net, url: str) -> None:
    net.names["localhost.example"] = ["127.0.0.1"]
    assert refused(url) == generic(url)
    assert net.connections == []


def test_dns_rebinding_cannot_switch_the_address_after_the_check(net: Net) -> None:
    # The first answer is public, a second lookup would say 127.0.0.1: there is no second lookup.
    assert download("http://rebind.example/img.png", allow_private=False, explain=False) == png()
    assert net.lookups == ["rebind.example"] and net.connections == [(PUBLIC, 80)]


def test_every_redirect_is_checked(net: Net) -> None:
    for target in ("http://127.0.0.1/img.png", "http://intranet.example/img.png", "ftp://images.example/img.png",
                   "file:///etc/passwd", "gopher://images.example/"):
        net.connections.clear()
        url = f"http://images.example/to?u={target}"
        assert refused(url) == generic(url), target
        assert net.connections == [(PUBLIC, 80)], target  # the first hop only
    # A redirect to another public name is followed, to the address checked for it.
    net.names["cdn.example"] = ["203.0.113.7"]  # documentation range: not public
    net.names["cdn2.example"] = ["198.51.100.20"]
    assert refused("http://images.example/to?u=http://cdn.example/img.png")
    net.names["cdn.example"] = ["8.8.4.4"]
    net.connections.clear()
    assert download("http://images.example/to?u=http://cdn.example/img.png", allow_private=False) == png()
    assert net.connections == [(PUBLIC, 80), ("8.8.4.4", 80)]


def test_redirect_loops_end(net: Net) -> None:
    url = "http://images.example/to?u=http://images.example/to?u=http://images.example/to?u=" * 3
    with pytest.raises(InputError, match="more than 5 redirects"):
        download(url + "http://images.example/img.png", allow_private=False)


def test_one_message_for_every_refusal_and_failure(net: Net) -> None:
    """A port scanner tells 'refused' from 'closed' from 'HTTP 404' from 'not an image': the web app's errors cannot."""
    urls = ["http://127.0.0.1:22/", "http://intranet.example:6379/", "ftp://images.example/",
            "http://nowhere.example/img.png", "http://images.example/gone", "http://images.example/page",
            "http://images.example:99999/"]
    assert {refused(u).replace(u, "URL") for u in urls} == {generic("URL")}
    net.refuse = True
    assert refused("http://images.example/img.png") == generic("http://images.example/img.png")
    net.refuse = False
    url = "http://images.example/img.png"
    assert refused(url, max_bytes=10) == sources.unfetchable(url, 10)  # too large: the same words


def test_the_cli_and_python_may_fetch_private_addresses_and_are_told_why(site: int) -> None:
    """For its own user, ``download`` fetches loopback (the real 127.0.0.1 server) and explains failures."""
    assert download(f"http://127.0.0.1:{site}/img.png") == png()
    assert download(f"http://127.0.0.1:{site}/to?u=/img.png") == png()
    with pytest.raises(InputError, match="the server answered HTTP 404"):
        download(f"http://127.0.0.1:{site}/gone")
    with pytest.raises(InputError, match="the server sent text/html, not an image"):
        download(f"http://127.0.0.1:{site}/page")
    with pytest.raises(InputError, match=r"only http:// and https:// addresses are fetched, got ftp:// \(redirected"):
        download(f"http://127.0.0.1:{site}/to?u=ftp://127.0.0.1/x")
    with pytest.raises(InputError, match="127.0.0.1, which is not public"):
        download(f"http://127.0.0.1:{site}/img.png", allow_private=False)


# -- the web app ---------------------------------------------------------------------------------------------
def test_the_web_app_fetches_public_addresses_only_unless_allowed(rgb: ToyModel, site: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{site}/img.png"
    with TestClient(create_app(Settings(home=rgb.home, run_jobs=False)), base_url="http://127.0.0.1") as c:
        answers = [c.post(f"/api/models/{rgb.name}/classify", data={"url": u}, headers=CSRF)
                   for u in (url, f"http://127.0.0.1:{site}/gone", "http://127.0.0.1:1/", "ftp://127.0.0.1/x")]
        assert [a.status_code for a in answers] == [400] * 4
        details = {a.json()["detail"].split(": ", 1)[1] for a in answers}
        assert details == {generic("x").split(": ", 1)[1]}  # one message, whatever the reason
        heat = c.post(f"/api/models/{rgb.name}/heatmap", data={"url": url}, headers=CSRF)
        assert heat.status_code in (400, 403) and "could not be fetched" in heat.json()["detail"]
    allowed = Settings(home=rgb.home, run_jobs=False, allow_private_urls=True)
    with TestClient(create_app(allowed), base_url="http://127.0.0.1") as c:
        answer = c.post(f"/api/models/{rgb.name}/classify", data={"url": url}, headers=CSRF)
        assert answer.status_code == 200 and answer.json()["source"] == url
        page = c.post(f"/api/models/{rgb.name}/classify", data={"url": f"http://127.0.0.1:{site}/page"}, headers=CSRF)
        assert page.status_code == 400 and "could not be fetched" in page.json()["detail"]


def test_serve_has_the_flag() -> None:
    from typer.testing import CliRunner

    from shoal.cli import _register, app

    _register()
    text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    assert "--allow-private-urls" in text
