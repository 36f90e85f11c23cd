"""What keeps the web app safe to run: hosts, origins, token, request size, CSRF, code, folders, zips, uploads.

- **Host.** The server answers only to the host names it knows: the loopback names
  (``127.0.0.1``, ``localhost``, ``[::1]``), the ``--host`` it listens on and each
  ``--allowed-host``. Any other ``Host`` header gets 400 before anything else runs, so a web
  page that points its own domain at this machine (DNS rebinding) reaches nothing.
- **Origin.** A state-changing request (POST, PUT, PATCH, DELETE) that carries an ``Origin``
  header must come from one of those names, on the port the request was sent to; a page of
  another site gets 403, whatever else it sends.
- **Token.** With an access token set, every request must carry it: an
  ``Authorization: Bearer`` header, the ``shoal_token`` cookie, or once ``?token=`` in the
  address (which sets the cookie and redirects to the same page without it).
- **Size.** Request bodies over the limit of their route get 413 before they are read
  (Content-Length) or as soon as they pass it (chunked uploads). Only the upload routes
  take files (images: ``max_image_bytes``; zips, weights: ``max_zip_bytes``); every other
  route takes at most ``max_body_bytes`` (1 MB), so a huge JSON body is never parsed.
- **CSRF.** A state-changing request must carry the ``X-Shoal-CSRF`` header (pages send the
  value of the ``shoal_csrf`` cookie; scripts may send any value, because another site's page
  cannot set a custom header without a CORS preflight, which the app never allows), or, for
  a plain HTML form, a ``csrf_token`` field equal to the cookie. A request carrying the
  access token in an ``Authorization`` header needs neither. The header is checked, like the
  host, origin and token, before the body is read; only a form's field waits for the form.
- **Code.** Network files (``.py``) are Python code: uploading one, training with one,
  resuming or exporting such a model and heat-maps of it are refused with 403 unless the server
  was started with ``shoal serve --allow-code``.
- **Folders.** A server-side path is used only when it resolves (symlinks followed) inside
  one of the configured roots.
- **Zips.** Members with absolute paths, ``..``, links or device files are refused, as are
  archives with too many members, members compressed more than ``max_zip_ratio`` times, or
  more than ``max_unzipped_bytes`` in all; sizes are counted while writing, not trusted
  from the headers.
- **Images.** An uploaded image must decode (the same safe decoder datasets use).
- **Image addresses.** Classify-by-URL fetches public addresses only (unless the server was
  started with ``--allow-private-urls``), checking the address it connects to on every
  redirect, and answers every refusal and failure with one message (:func:`fetch_image`).
"""

from __future__ import annotations

import hmac
import lzma
import os
import re
import secrets
import shutil
import stat
import zipfile
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from fastapi import Depends, HTTPException, Request

from shoal.errors import CodeNotAllowedError, InputError, ShoalError
from shoal.server.config import Settings, check_host_name, get_settings

TOKEN_COOKIE = "shoal_token"
CSRF_COOKIE = "shoal_csrf"
CSRF_HEADER = "x-shoal-csrf"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
CSRF_MISMATCH = "the CSRF token does not match this browser's; reload the page and try again"
CSRF_MISSING = ("missing CSRF token: pages send it by themselves (reload the page); scripts must send the header "
                "'X-Shoal-CSRF: 1' (or 'Authorization: Bearer TOKEN')")
DEFAULT_PORTS = {"http": 80, "https": 443}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestTooLarge(Exception):
    """A request body passed the limit of its route."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def too_large_detail(limit: int) -> str:
    return f"the upload is larger than the limit of {_size(limit)}; send a smaller file (or raise the limit)"


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return f"{n:.1f} GB"


ENVELOPE_BYTES = 64 * 1024
"""Room for the multipart envelope around an uploaded file (headers, boundaries, small fields)."""

_IMAGE_ROUTE = re.compile(r"/api/models/[^/]+/(classify|heatmap|layers)\Z")
_UPLOAD_ROUTE = re.compile(r"/api/(datasets/upload|models/import|networks/files|pretrained|models/[^/]+/classify-many)\Z")


def body_limit(settings: Settings, path: str) -> int:
    """The most bytes a request to ``path`` may send.

    The routes that take one image get the image limit, the routes that take a zip or a file
    the zip limit; every other route (JSON and form bodies) gets ``max_body_bytes``.
    """
    if _IMAGE_ROUTE.match(path):
        return settings.max_image_bytes + ENVELOPE_BYTES
    if _UPLOAD_ROUTE.match(path):
        return settings.max_zip_bytes + ENVELOPE_BYTES
    return settings.max_body_bytes


def is_upload_route(path: str) -> bool:
    """Whether requests to ``path`` upload files (and so get an upload limit, not the small body limit)."""
    return bool(_IMAGE_ROUTE.match(path) or _UPLOAD_ROUTE.match(path))


def body_too_large_detail(limit: int, path: str) -> str:
    if is_upload_route(path):
        return too_large_detail(limit)
    return (f"the request body is larger than the limit of {_size(limit)} for {path}; options and names fit in far "
            "less (files go to the upload routes, see /docs)")


def _json_response(status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[dict, dict]:
    body = ('{"detail": ' + _json_string(detail) + "}").encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         *(headers or [])]}
    return start, {"type": "http.response.body", "body": body}


def _json_string(text: str) -> str:
    import json

    return json.dumps(text)


class GuardMiddleware:
    """ASGI middleware: the host, the origin, the access token and the request size limit, before any route runs."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        # Every check that can refuse the request runs here, before a byte of the body is read.
        verdict = self._check_host(headers) or self._check_origin(scope, headers)
        if verdict is None and self.settings.token:
            verdict = self._check_token(scope, headers)
        if verdict is None:
            verdict = _check_csrf_early(scope, headers)
        if verdict is not None:
            for message in verdict:
                await send(message)
            return
        limit = body_limit(self.settings, scope["path"])
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            for message in _json_response(413, body_too_large_detail(limit, scope["path"])):
                await send(message)
            return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise RequestTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app's own answer to a body cut short is replaced by the 413 below
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except RequestTooLarge:
            pass
        if exceeded and not started:
            for message in _json_response(413, body_too_large_detail(limit, scope["path"])):
                await send(message)

    def _allowed(self, name: str | None) -> bool:
        names = self.settings.host_names
        return name is not None and (name in names or "*" in names)

    def _check_host(self, headers: dict[str, str]) -> tuple[dict, dict] | None:
        """400 unless the ``Host`` header names this server (a request without one is no browser's)."""
        raw = headers.get("host")
        if raw is None or self._allowed(_host_and_port(raw)[0]):
            return None
        name = _host_and_port(raw)[0] or raw
        known = ", ".join(sorted(f"[{n}]" if ":" in n else n for n in self.settings.host_names))
        return _json_response(400, f"this shoal server does not answer to the host name {raw!r} (it answers to "
                                   f"{known}): open it as http://localhost:{self.settings.port}/, or, if {name!r} is "
                                   f"meant to reach it, restart it with 'shoal serve --allowed-host {name}'")

    def _check_origin(self, scope: Scope, headers: dict[str, str]) -> tuple[dict, dict] | None:
        """403 for a state-changing request whose ``Origin`` is not this server (another site's page)."""
        origin = headers.get("origin")
        if scope.get("method") in SAFE_METHODS or origin is None:
            return None
        try:
            parts = urlsplit(origin.strip())
            scheme, name = parts.scheme.lower(), check_host_name(parts.hostname or "")
            origin_port = parts.port or DEFAULT_PORTS.get(scheme)
        except ValueError:  # a port out of range, a name with odd characters (ConfigError)
            scheme, name, origin_port = "", None, None
        _, host_port = _host_and_port(headers.get("host", ""))
        same_port = origin_port == host_port if host_port is not None else origin_port == DEFAULT_PORTS.get(scheme)
        if scheme in DEFAULT_PORTS and self._allowed(name) and same_port:
            return None
        return _json_response(403, f"cross-site request refused: it comes from a page at {origin!r}, which is not "
                                   "this shoal server; use the server's own pages, or send the request from a script "
                                   "(no Origin header) with 'X-Shoal-CSRF: 1'")

    def _check_token(self, scope: Scope, headers: dict[str, str]) -> tuple[dict, dict] | None:
        token = self.settings.token or ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and _same(auth[7:].strip(), token):
            scope.setdefault("state", {})["bearer"] = True
            return None
        if _same(_cookie(headers.get("cookie", ""), TOKEN_COOKIE) or "", token):
            return None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((v for k, v in query if k == "token"), None)
        if given is not None and _same(given, token) and scope.get("method") in SAFE_METHODS:
            # First visit with ?token=: remember it in a cookie and drop it from the address.
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = same_site_path(scope.get("root_path", "") + scope["path"]) + (f"?{rest}" if rest else "")
            cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            start = {"type": "http.response.start", "status": 303,
                     "headers": [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
                                 (b"content-length", b"0")]}
            return start, {"type": "http.response.body", "body": b""}
        return _json_response(401, "this shoal server needs its access token: open the address printed by "
                                   "'shoal serve' (it ends in ?token=...), or send 'Authorization: Bearer TOKEN'",
                              [(b"www-authenticate", b"Bearer")])


def same_site_path(path: str) -> str:
    """``path`` as a redirect target that stays on this server.

    A path that starts with ``//`` or ``/\\`` would be read by browsers as another host
    (``//evil.example/`` is a whole address); leading slashes and backslashes collapse into one
    ``/``, and the rest is percent-encoded.

    Examples:
        >>> same_site_path("//evil.example/x")
        '/evil.example/x'
        >>> same_site_path("/models/a b")
        '/models/a%20b'
    """
    return "/" + quote(path.lstrip("/\\"), safe="/!$&'()*+,;=:@-._~")


def _check_csrf_early(scope: Scope, headers: dict[str, str]) -> tuple[dict, dict] | None:
    """403 for a state-changing request without a CSRF header, before its body is read.

    The header (or a bearer token) decides here. A plain HTML form (urlencoded or multipart)
    from a browser that holds the CSRF cookie carries the token as a field instead: it passes
    on to :func:`check_csrf`, which reads the form, within the route's body limit.
    """
    if scope.get("method") in SAFE_METHODS or scope.get("state", {}).get("bearer"):
        return None
    cookie = _cookie(headers.get("cookie", ""), CSRF_COOKIE)
    header = headers.get(CSRF_HEADER)
    if header:
        if cookie and not hmac.compare_digest(header.encode(), cookie.encode()):
            return _json_response(403, CSRF_MISMATCH)
        return None
    content_type = headers.get("content-type", "")
    if cookie and content_type.startswith(FORM_TYPES):
        return None
    return _json_response(403, CSRF_MISSING)


def _host_and_port(value: str) -> tuple[str | None, int | None]:
    """The normalised name and the port (``None`` when absent) of a ``Host`` header; ``(None, None)`` if malformed."""
    try:
        parts = urlsplit("//" + value.strip())
        return check_host_name(parts.hostname or ""), parts.port
    except ValueError:  # a port out of range, a name with odd characters (ConfigError)
        return None, None


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


async def check_csrf(request: Request) -> None:
    """The part of the CSRF check that needs the body (see the module docstring): a plain HTML form's field.

    :class:`GuardMiddleware` (:func:`_check_csrf_early`) has already decided every request by its header or
    bearer token before the body was read, and let through without either only a form from a browser that
    holds the CSRF cookie; here that form's ``csrf_token`` field must equal the cookie.
    """
    bearer = request.scope.get("state", {}).get("bearer")
    if request.method in SAFE_METHODS or bearer or request.headers.get(CSRF_HEADER):
        return  # decided before the body was read
    cookie = request.cookies.get(CSRF_COOKIE)
    if cookie and request.headers.get("content-type", "").startswith(FORM_TYPES):
        form = await request.form()
        field = form.get(CSRF_FIELD)
        if isinstance(field, str) and hmac.compare_digest(field.encode(), cookie.encode()):
            return
    raise HTTPException(403, CSRF_MISSING)


# -- code ----------------------------------------------------------------------------------------
def require_code_allowed(settings: Settings, what: str) -> None:
    """Refuse ``what`` (something that runs a network file's Python code) unless the server allows code.

    Raises:
        CodeNotAllowedError: the server was started without ``--allow-code`` (the app answers 403).
    """
    if not settings.allow_code:
        raise CodeNotAllowedError(f"{what} is refused: network files are Python code that runs on the server, and "
                                  "this server was started without --allow-code; restart it with 'shoal serve "
                                  "--allow-code' only if everyone who can reach it may run programs on this machine")


def network_uploads_allowed(settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """Route guard: network files may be uploaded only to a server started with ``--allow-code``."""
    require_code_allowed(settings, "uploading a network file")


# -- server-side folders -------------------------------------------------------------------------
def confine(path: str, roots: tuple[Path, ...], *, what: str = "folder") -> Path:
    """Return ``path`` resolved, if it lies inside one of ``roots``.

    Raises:
        InputError: no roots are configured, the path does not exist, or it resolves outside
            every root (symlinks and ``..`` included).
    """
    if not roots:
        raise InputError(f"this server allows no server-side {what}s; upload a zip instead, or restart it "
                         "with 'shoal serve --roots DIR' to allow folders under DIR")
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise InputError(f"give the path of a {what} on the server, got {path!r}")
    raw = Path(path.strip()).expanduser()
    if not raw.is_absolute():
        raw = roots[0] / raw
    try:
        resolved = raw.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InputError(f"{what} {path!r} does not exist on the server") from None
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise InputError(f"{what} {path!r} is outside the folders this server may read ({allowed}); "
                     "restart it with 'shoal serve --roots DIR' to allow another folder")


# -- zips ----------------------------------------------------------------------------------------
DAMAGED_ZIP = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError,
               ValueError, UnicodeDecodeError)
"""What :mod:`zipfile` raises for an archive whose headers lie (a bad CRC, a member cut short, a name that
differs between the directory and the member, an unknown compression method, encryption)."""

def safe_extract(archive: Path, dest: Path, settings: Settings) -> Path:
    """Extract a zip of class folders into ``dest`` (which must not exist) and return the class root.

    The class root is ``dest`` itself, or the single top-level folder when the zip wraps
    everything in one (``photos/cats/1.jpg``).

    Raises:
        InputError: not a zip, or unsafe (see the module docstring); nothing is left behind.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, *DAMAGED_ZIP):
        raise InputError("the upload is not a zip file; zip the folder of class sub-folders and upload that") from None
    dest.mkdir(parents=True)
    try:
        with zf:
            _extract_members(zf, dest, settings)
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, DAMAGED_ZIP) and not isinstance(exc, ShoalError):  # headers that lie about sizes, checksums, names or methods
            raise InputError(f"the zip is damaged or uses a feature shoal cannot read ({exc or type(exc).__name__}); "
                             "zip the folder of class sub-folders again, without encryption, and upload that") from None
        raise
    entries = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        if any(p.is_dir() for p in inner.iterdir()):
            return inner
    return dest


def check_archive_listing(what: str, count: int, declared: int, settings: Settings) -> None:
    """The uploads' limits on an archive's listing, before anything is unpacked: at most
    ``max_zip_members`` members and ``max_unzipped_bytes`` unpacked (``what`` names the archive: "zip").

    Raises:
        InputError: naming the figure and the limit.
    """
    if count > settings.max_zip_members:
        raise InputError(f"the {what} holds {count} files, more than the limit of {settings.max_zip_members}")
    if declared > settings.max_unzipped_bytes:
        raise InputError(f"the {what} would expand to {_size(declared)}, more than the limit of "
                         f"{_size(settings.max_unzipped_bytes)}")


def member_parts(name: str, *, what: str, remedy: str) -> tuple[str, ...]:
    """The path parts of the archive member ``name`` (``\\`` read as ``/``), refusing one that could land
    outside the folder it is unpacked into.

    Raises:
        InputError: an absolute path, a drive, ``..`` or a NUL byte; the message ends with ``remedy``.
    """
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts or "\x00" in name:
        raise InputError(f"the {what} has an unsafe path {name!r} (absolute, or leaving the archive with '..'); "
                         f"{remedy}")
    return parts


def _extract_members(zf: zipfile.ZipFile, dest: Path, settings: Settings) -> None:
    members = zf.infolist()
    check_archive_listing("zip", len(members), sum(m.file_size for m in members), settings)
    written = 0
    for member in members:
        name = member.filename
        parts = member_parts(name, what="zip", remedy="zip the class folders with relative paths")
        mode = (member.external_attr >> 16) & 0o170000
        if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputError(f"the zip member {name!r} is a link or special file; zip plain files only")
        target = dest.joinpath(*parts) if parts else dest
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if member.compress_size and member.file_size / member.compress_size > settings.max_zip_ratio:
            raise InputError(f"the zip member {name!r} is compressed {member.file_size / member.compress_size:.0f} "
                             f"times, more than the limit of {settings.max_zip_ratio:.0f} (a zip bomb?)")
        target.parent.mkdir(parents=True, exist_ok=True)
        budget = member.file_size
        with zf.open(member) as src, open(target, "wb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                budget -= len(chunk)
                written += len(chunk)
                if budget < 0 or written > settings.max_unzipped_bytes:
                    raise InputError(f"the zip member {name!r} expands past its declared size or the total "
                                     f"limit of {_size(settings.max_unzipped_bytes)} (a zip bomb?)")
                out.write(chunk)


# -- uploads -------------------------------------------------------------------------------------
async def save_upload(upload: Any, dest: Path, *, limit: int, what: str = "file") -> int:
    """Copy an uploaded file to ``dest``, refusing it with 413 past ``limit`` bytes; return its size."""
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(dest, "wb") as out:
            while True:
                chunk = await upload.read(1 << 20)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"the {what} is larger than the limit of {_size(limit)}")
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if size == 0:
        dest.unlink(missing_ok=True)
        raise InputError(f"the uploaded {what} {getattr(upload, 'filename', '') or ''!r} is empty (0 bytes)")
    return size


async def read_upload(upload: Any, *, limit: int, what: str = "image") -> bytes:
    """Return the bytes of an uploaded file, refusing it with 413 past ``limit`` bytes.

    Raises:
        HTTPException: 413 past ``limit``.
        InputError: the file is empty.
    """
    data = bytearray()
    while True:
        chunk = await upload.read(1 << 20)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise HTTPException(413, f"the {what} {upload.filename or ''!r} is larger than the limit of {_size(limit)}")
    if not data:
        raise InputError(f"cannot read {what} {upload.filename or 'upload'}: empty file (0 bytes)")
    return bytes(data)


def fetch_image(url: str, settings: Settings) -> bytes:
    """The image at ``url``, fetched for a web user: public addresses only (unless ``--allow-private-urls``).

    Every refusal and failure (a private address, a refused connection, an HTTP error, a
    timeout, a body that is not an image) gives the same message, so that the answers do not
    tell which hosts and ports exist (see :func:`shoal.inference.sources.download`).

    Raises:
        InputError: the one message of :func:`~shoal.inference.sources.unfetchable`.
    """
    from shoal.inference.sources import download, unfetchable

    data = download(url, max_bytes=settings.max_image_bytes, allow_private=settings.allow_private_urls,
                    explain=False)
    try:
        check_image(data, url)
    except InputError:
        raise InputError(unfetchable(url, settings.max_image_bytes)) from None
    return data


def check_image(data: bytes, name: str) -> None:
    """Raise :class:`InputError` (saying why) unless ``data`` decodes as an image."""
    from shoal.data.imageops import open_image

    try:
        open_image(data)
    except InputError as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise InputError(f"cannot read image {name}: {reason}") from None


def safe_filename(name: str | None, default: str = "upload") -> str:
    """A file name without folders or odd characters, for storing an upload."""
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in base).lstrip(".")
    return cleaned[:100] or default
