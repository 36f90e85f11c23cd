"""The web app's settings: where the store is, who may connect, what may be uploaded.

Settings are read once from the environment by :func:`get_settings` (cached), and
``shoal serve`` builds them from its options instead. Tests pass their own
:class:`Settings` to :func:`shoal.server.create_app`.

Environment variables: ``SHOAL_HOME`` (the store), ``SHOAL_TOKEN`` (access token),
``SHOAL_ROOTS`` (server-side folders datasets may be built from, separated by
``os.pathsep``), ``SHOAL_MAX_IMAGE_MB`` and ``SHOAL_MAX_ZIP_MB`` (upload limits).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

from shoal.errors import ConfigError
from shoal.store import default_home

MB = 1024 * 1024
DEFAULT_PORT = 5000
MIN_TOKEN_LENGTH = 8


@dataclass(frozen=True)
class Settings:
    """Everything the web app needs to know before it starts."""

    home: Path = field(default_factory=default_home)  # the store: datasets, models, jobs (SHOAL_HOME)
    host: str = "127.0.0.1"  # interface to listen on; anything but loopback needs a token
    port: int = DEFAULT_PORT  # TCP port
    token: str | None = None  # access token checked on every request (SHOAL_TOKEN); None = open on loopback
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides loopback and `host` ("*" = any, needs a token)
    allow_code: bool = False  # accept network files (.py) and run them: uploads, trainings, heat-maps
    roots: tuple[Path, ...] = ()  # server-side folders datasets may be built from (SHOAL_ROOTS); none = uploads only
    max_image_bytes: int = 50 * MB  # largest accepted image upload (SHOAL_MAX_IMAGE_MB)
    max_zip_bytes: int = 2048 * MB  # largest accepted zip or weights upload (SHOAL_MAX_ZIP_MB)
    max_unzipped_bytes: int = 8192 * MB  # most bytes a zip may expand to
    max_zip_members: int = 200_000  # most files a zip may hold
    max_zip_ratio: float = 200.0  # highest compression ratio of one zip member (bombs exceed it)
    max_body_bytes: int = 1 * MB  # largest body of a request that uploads no file (JSON options, forms)
    allow_private_urls: bool = False  # classify-by-URL may fetch loopback, private and link-local addresses
    poll_s: float = 0.5  # how often the job runner looks for finished and queued jobs
    run_jobs: bool = True  # start the job runner with the app (tests of the API alone may not)

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())
        object.__setattr__(self, "roots", tuple(Path(r).expanduser().resolve() for r in self.roots))
        object.__setattr__(self, "allowed_hosts", tuple(check_host_name(h) for h in self.allowed_hosts))
        if self.host not in WILDCARD_HOSTS:
            check_host_name(self.host, option="--host")
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"the access token must have at least {MIN_TOKEN_LENGTH} characters, "
                              f"got {len(self.token)}; choose a longer one (for example: python -c "
                              "\"import secrets; print(secrets.token_urlsafe())\")")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(f"listening on {self.host!r} lets other machines connect, so it needs an access "
                              "token: pass --token TOKEN or set SHOAL_TOKEN (or listen on 127.0.0.1)")
        if "*" in self.allowed_hosts and not self.token:
            raise ConfigError("--allowed-host '*' answers any host name, which lets other web sites reach the server "
                              "(DNS rebinding), so it needs an access token: pass --token TOKEN, or list the names "
                              "instead (--allowed-host NAME, repeated)")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be from 1 to 65535, got {self.port}")
        for name in ("max_image_bytes", "max_zip_bytes", "max_unzipped_bytes", "max_zip_members", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        missing = [str(r) for r in self.roots if not r.is_dir()]
        if missing:
            raise ConfigError(f"allowed root {missing[0]!r} is not a folder; give existing folders to --roots")

    @cached_property
    def host_names(self) -> frozenset[str]:
        """The ``Host`` names the server answers to: loopback, ``host`` (unless a wildcard) and ``allowed_hosts``."""
        names = set(LOOPBACK_NAMES) | set(self.allowed_hosts)
        if self.host not in WILDCARD_HOSTS:
            names.add(check_host_name(self.host))
        return frozenset(names)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the environment variables, then ``overrides`` (``None`` values ignored)."""
        env = os.environ
        values: dict[str, object] = {}
        if env.get("SHOAL_HOME"):
            values["home"] = Path(env["SHOAL_HOME"])
        if env.get("SHOAL_TOKEN"):
            values["token"] = env["SHOAL_TOKEN"]
        if env.get("SHOAL_ROOTS"):
            values["roots"] = tuple(Path(p) for p in env["SHOAL_ROOTS"].split(os.pathsep) if p)
        for var, name in (("SHOAL_MAX_IMAGE_MB", "max_image_bytes"), ("SHOAL_MAX_ZIP_MB", "max_zip_bytes")):
            if env.get(var):
                try:
                    values[name] = int(float(env[var]) * MB)
                except ValueError:
                    raise ConfigError(f"{var} must be a number of megabytes, got {env[var]!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")  # every interface: not a name anyone browses to


def check_host_name(name: str, *, option: str = "--allowed-host") -> str:
    """A host name as the ``Host`` check compares it: lower case, no trailing dot, IPv6 without brackets.

    Raises:
        ConfigError: ``name`` is empty, carries a scheme, a path or a port, or has odd characters.
    """
    text = name.strip().lower().rstrip(".") if isinstance(name, str) else ""
    if text == "*":
        return text
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if not bare or not all(c.isalnum() or c in ".-_" for c in bare):
        raise ConfigError(f"{option} {name!r} is not a host name: give the bare name or address the browser "
                          f"shows, without scheme, port or path (e.g. {option} shoal.example.org)")
    return bare


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment, read once (override with ``app.dependency_overrides``)."""
    return Settings.from_env()
