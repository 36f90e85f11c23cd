"""Which networks run a user's Python code, and when shoal may run it.

A network named ``file:path/to/net.py`` (or any name ending in ``.py``) is built by
importing that file, which runs whatever code it holds. Every other network is built
from shoal's own code, timm or torchvision. shoal runs a network file only when its user
said so:

- training from the CLI or Python: the user named the file themselves;
- a bundle rebuilt in torch (``runtime="torch"``, heat-maps, layer views): only with
  ``trust_code=True`` (CLI: ``--trust-code``), because a bundle is data that may come
  from anyone. Classifying with the default ONNX runtime never runs code;
- the web app: only when started with ``shoal serve --allow-code``
  (see :mod:`shoal.server.security`).

Torch-free, so the checks run before anything is imported.
"""

from __future__ import annotations

from typing import Any

from shoal.errors import CodeNotAllowedError

FILE_PREFIX = "file:"


def is_network_file(name: Any) -> bool:
    """Whether the network ``name`` is a user's Python file (building it runs that file).

    Examples:
        >>> is_network_file("file:/home/me/net.py"), is_network_file("nets/net.py"), is_network_file("lenet")
        (True, True, False)
    """
    return isinstance(name, str) and (name.startswith(FILE_PREFIX) or name.endswith(".py"))


def check_bundle_code(manifest: dict[str, Any], where: str, *, trust_code: bool) -> None:
    """Refuse to rebuild a bundle's network in torch when that runs an untrusted Python file.

    Raises:
        CodeNotAllowedError: the manifest's architecture is a network file and ``trust_code``
            is false.
    """
    architecture = manifest.get("architecture")
    if is_network_file(architecture) and not trust_code:
        raise CodeNotAllowedError(
            f"bundle {where!r} names a Python file as its network ({architecture!r}); rebuilding it in torch "
            "(runtime='torch', heat-maps, layers) would run that file's code: pass trust_code=True "
            "(CLI: --trust-code) only if you trust whoever made the bundle, or classify with the default "
            "runtime='onnx', which runs no code")
