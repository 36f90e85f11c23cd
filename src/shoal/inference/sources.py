"""What can be classified, and how each kind of input becomes bytes or pixels to decode.

:func:`expand` turns whatever a caller hands to ``predict`` — a path, a folder, an
http(s) URL, bytes, a PIL image, a NumPy array, or a list of these — into a flat list of
:class:`Item` objects, each with a printable ``source`` and a ``payload`` that
:func:`shoal.data.imageops.prepare` accepts. Nothing is decoded or downloaded here;
:func:`fetch` does that per item, so a batch can load its images in parallel and one bad
item never stops the others.

Torch-free: NumPy, Pillow and the standard library only.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from shoal.errors import InputError

if TYPE_CHECKING:
    import http.client

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
"""Largest image fetched from a URL (50 MiB); bigger downloads are stopped and refused."""

DOWNLOAD_TIMEOUT_S = 15.0
"""Seconds to wait for a URL to connect, and between two chunks of its data."""

IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga", ".jp2", ".j2k", ".avif", ".heic",
})
"""File name endings (any case) taken as images when a folder is expanded."""

URL_SCHEMES = ("http://", "https://")

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Item:
    """One image to classify, not yet read.

    Attributes:
        source: how results name it: the path or URL as given, or ``<array>``, ``<bytes>``...
        payload: what :func:`fetch` reads: a :class:`~pathlib.Path`, a URL string, bytes,
            a PIL image or a NumPy array (already in RGB order).
        error: set when the item is known to be unusable before reading (e.g. an unknown type).
    """

    source: str
    payload: Any
    error: str | None = None


def is_url(value: object) -> bool:
    """Whether ``value`` is a string starting with ``http://`` or ``https://`` (any case)."""
    return isinstance(value, str) and value[:8].lower().startswith(URL_SCHEMES)


def expand(inputs: Any, *, bgr: bool = False, strict: bool = True) -> tuple[list[Item], bool]:
    """Flatten what was given to ``predict`` into items.

    Args:
        inputs: a path (str or PathLike), a folder (its images, recursively, sorted), an
            http(s) URL, bytes, an open binary file, a PIL image, a NumPy array (``H×W`` gray, ``H×W×3`` RGB,
            ``H×W×4`` RGBA, or ``N×H×W×C`` for a batch), or a list/tuple of these.
        bgr: the arrays are in OpenCV's BGR(A) order; they are flipped to RGB(A) here.
        strict: raise for a single unusable input; ``False`` gives an error item instead.

    Returns:
        ``(items, single)``: the items in order, and whether the input was one image (not a
        list, folder or batch array), in which case ``predict`` returns one result.

    Raises:
        InputError: a single input that is not something an image can come from (a list
            with such an entry gets an error item instead).
    """
    if isinstance(inputs, (list, tuple)):
        items: list[Item] = []
        for index, entry in enumerate(inputs):
            items.extend(_expand_one(entry, bgr=bgr, index=index, strict=False))
        return items, False
    if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
        return [_array_item(a, bgr=bgr, label=f"<array {i}>") for i, a in enumerate(inputs)], False
    if isinstance(inputs, (str, os.PathLike)) and not is_url(inputs) and Path(inputs).expanduser().is_dir():
        return _expand_one(inputs, bgr=bgr, index=None, strict=strict), False
    return _expand_one(inputs, bgr=bgr, index=None, strict=strict), True


def _expand_one(entry: Any, *, bgr: bool, index: int | None, strict: bool) -> list[Item]:
    suffix = "" if index is None else f" {index}"
    if isinstance(entry, str) and "://" in entry[:16] and not is_url(entry):
        return [_refuse(entry, f"only http:// and https:// URLs can be fetched, got {entry.split('://')[0]}://",
                        strict)]
    if is_url(entry):
        return [Item(entry, entry)]
    if isinstance(entry, (str, os.PathLike)):
        path = Path(entry).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                return [_refuse(os.fspath(entry), "the folder has no image files (looked for names ending in "
                                ".jpg, .jpeg, .png, .bmp, .gif, .tif, .webp and other image types)", strict)]
            return [Item(str(p), p) for p in found]
        return [Item(os.fspath(entry), path)]
    if isinstance(entry, (bytes, bytearray, memoryview)):
        return [Item(f"<bytes{suffix}>", bytes(entry))]
    if isinstance(entry, np.ndarray):
        if entry.ndim == 4:
            return [_array_item(a, bgr=bgr, label=f"<array{suffix}:{i}>") for i, a in enumerate(entry)]
        return [_array_item(entry, bgr=bgr, label=f"<array{suffix}>")]
    if _is_pil(entry):
        return [Item(f"<PIL image{suffix}>", entry)]
    if callable(getattr(entry, "read", None)):  # an open binary file
        name = getattr(entry, "name", None)
        return [Item(str(name) if isinstance(name, str) else f"<file{suffix}>", entry)]
    return [_refuse(f"<{type(entry).__name__}{suffix}>",
                    f"cannot classify a {type(entry).__name__}: give a path, folder, http(s) URL, bytes, "
                    "binary file, PIL image or NumPy array (or a list of these)", strict)]


def _refuse(source: str, reason: str, strict: bool) -> Item:
    if strict:
        raise InputError(f"cannot read image {source}: {reason}")
    return Item(source, None, reason)


def _array_item(array: np.ndarray, *, bgr: bool, label: str) -> Item:
    if bgr and array.ndim == 3 and array.shape[2] in (3, 4):
        order = [2, 1, 0] if array.shape[2] == 3 else [2, 1, 0, 3]
        array = array[:, :, order]
    return Item(label, array)


def _is_pil(value: object) -> bool:
    return isinstance(value, Image.Image)


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (by name ending), recursively, sorted by relative path.

    The walk is :func:`shoal.data.scan.walk`: hidden entries are left out, links are followed
    but never twice into the same folder.
    """
    from shoal.data.scan import walk

    return [p for p in walk(folder) if p.suffix.lower() in IMAGE_SUFFIXES]


def fetch(item: Item, *, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = DOWNLOAD_TIMEOUT_S) -> Any:
    """Return what :func:`~shoal.data.imageops.prepare` should decode for ``item``.

    URLs are downloaded (bytes are returned); everything else is passed through.

    Raises:
        InputError: the item was refused when expanded, or its URL cannot be fetched, is
            larger than ``max_bytes``, or is not an image (an HTML page, say).
    """
    if item.error is not None:
        raise InputError(f"cannot read image {item.source}: {item.error}")
    if isinstance(item.payload, str) and is_url(item.payload):
        return download(item.payload, max_bytes=max_bytes, timeout=timeout)
    return item.payload


def download(url: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = DOWNLOAD_TIMEOUT_S,
             allow_private: bool = True, explain: bool = True) -> bytes:
    """Download an image over http(s), refusing anything larger than ``max_bytes``.

    The host name is resolved once per request, the addresses are checked, and the
    connection goes to the very address that was checked (no second lookup that a DNS
    rebinding could answer differently); every redirect (at most :data:`MAX_REDIRECTS`) is
    checked the same way, and only ``http://`` and ``https://`` are followed. The connection is
    made directly (proxy variables are not used).

    Args:
        url: an ``http://`` or ``https://`` URL.
        max_bytes: the most bytes read; the download stops there and is refused.
        timeout: seconds to wait for the connection and for each chunk.
        allow_private: also fetch loopback, private, link-local and other non-public addresses.
            The CLI and the Python API fetch for their own user and allow them (the default);
            the web app fetches for whoever can reach it and allows them only when started with
            ``shoal serve --allow-private-urls``.
        explain: say why a download failed (the address, the HTTP status, the timeout...).
            ``False`` gives one message for every refusal and failure, so that the answers
            cannot be used to map which hosts and ports answer (the web app's choice).

    Returns:
        The body.

    Raises:
        InputError: another scheme, a non-public address (unless allowed), an HTTP error
            status, a network failure or timeout, a body over ``max_bytes``, or a
            ``Content-Type`` that says it is not an image.
    """
    try:
        return _download(url, max_bytes=max_bytes, timeout=timeout, allow_private=allow_private)
    except _Failed as exc:
        if explain:
            raise InputError(f"cannot read image {url}: {exc.reason}") from None
        raise InputError(unfetchable(url, max_bytes)) from None


def unfetchable(url: str, max_bytes: int) -> str:
    """The one message for every address that is refused or cannot be fetched (``explain=False``)."""
    return (f"cannot read image {url}: it could not be fetched as an image (only public http:// and https:// "
            f"addresses are fetched, of images up to {max_bytes / 2**20:.0f} MiB); download it and upload the "
            "file instead")


MAX_REDIRECTS = 5
"""Redirects followed by :func:`download` before it gives up."""

_REDIRECTS = (301, 302, 303, 307, 308)


class _Failed(Exception):
    """Why a download failed, in words for a user who may be told (``explain=True``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is a public unicast address (not loopback, private, link-local, multicast, reserved...).

    An IPv6 address that carries an IPv4 one (``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``, 6to4)
    is judged by the IPv4 address it reaches; Teredo addresses are refused.

    Examples:
        >>> import ipaddress
        >>> [is_public_address(ipaddress.ip_address(a)) for a in ("93.184.216.34", "10.0.0.1", "169.254.169.254")]
        [True, False, False]
        >>> is_public_address(ipaddress.ip_address("::ffff:127.0.0.1"))
        False
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None:
            return False
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            return is_public_address(inner)
    return address.is_global and not (address.is_private or address.is_loopback or address.is_link_local
                                      or address.is_multicast or address.is_reserved or address.is_unspecified)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _resolve(host: str, port: int, *, allow_private: bool) -> str:
    """The one address to connect to for ``host``, after checking every address it resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _Failed(f"the host name {host!r} cannot be resolved ({exc}); check the address") from None
    addresses = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            continue
    if not addresses:
        raise _Failed(f"the host name {host!r} has no address; check the address")
    if not allow_private:
        refused = [a for a in addresses if not is_public_address(a)]
        if refused:
            raise _Failed(f"{host!r} is the address {refused[0]}, which is not public (loopback, private, link-local "
                          "or reserved); such addresses are fetched only when allowed")
    return str(addresses[0])


def _open_socket(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``address`` (an IP address, never a name: nothing is resolved here)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


@functools.cache
def _pinned_connections() -> dict[str, type[http.client.HTTPConnection]]:
    """The connection classes for ``http`` and ``https``, made on the first URL.

    So a process that classifies only files never imports ``http.client`` or ``ssl``.
    """
    import http.client
    import ssl

    class _PinnedHTTP(http.client.HTTPConnection):
        """An HTTP connection to a checked address, sending the host name it was asked for."""

        def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
            super().__init__(host, port, timeout=timeout)
            self.address = address

        def connect(self) -> None:
            self.sock = _open_socket(self.address, self.port, self.timeout)

    class _PinnedHTTPS(http.client.HTTPSConnection):
        """An HTTPS connection to a checked address; the certificate is checked against the host name."""

        def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
            super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
            self.address = address

        def connect(self) -> None:
            sock = _open_socket(self.address, self.port, self.timeout)
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)

    return {"http": _PinnedHTTP, "https": _PinnedHTTPS}


def _download(url: str, *, max_bytes: int, timeout: float, allow_private: bool) -> bytes:
    import http.client

    for hop in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise _Failed(f"only http:// and https:// addresses are fetched, got {scheme or 'no scheme'}://"
                          + (f" (redirected to {url})" if hop else ""))
        try:
            host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise _Failed("the address has a port that is not a number from 0 to 65535") from None
        if not host:
            raise _Failed("the address has no host name")
        address = _resolve(host, port, allow_private=allow_private)
        connection = _pinned_connections()[scheme](host, port, address, timeout)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        try:
            connection.request("GET", target, headers={"User-Agent": "shoal", "Accept": "image/*"})
            response = connection.getresponse()
            if response.status in _REDIRECTS and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location", ""))
                continue
            if response.status != 200:
                raise _Failed(f"the server answered HTTP {response.status} {response.reason}")
            return _read_body(response, max_bytes)
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise _Failed(_network_reason(exc)) from None
        finally:
            connection.close()
    raise _Failed(f"more than {MAX_REDIRECTS} redirects; give the image's own address")


def _read_body(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise _Failed(f"it is {int(length) / 2**20:.1f} MiB, more than the limit of {max_bytes / 2**20:.0f} MiB; "
                      "download it and pass the file instead")
    kind = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if kind.startswith("text/"):
        raise _Failed(f"the server sent {kind}, not an image (is it a web page? give the image's own address)")
    data = bytearray()
    while True:
        chunk = response.read(_CHUNK)
        if not chunk:
            break
        data += chunk
        if len(data) > max_bytes:
            raise _Failed(f"it is larger than the limit of {max_bytes / 2**20:.0f} MiB; download it and pass the "
                          "file instead")
    if not data:
        raise _Failed("the server sent an empty body")
    return bytes(data)


def _network_reason(reason: object) -> str:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "no answer in time (timed out); check the address and your connection"
    return f"cannot connect ({reason}); check the address and your connection"

