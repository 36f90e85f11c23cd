"""Uploaded assets kept in the store: network definition files and pretrained weights.

They live beside the indexed datasets and models (:meth:`shoal.store.Store.assets`):
``networks/<file>.py`` and ``pretrained/<name>/`` (the weights, ``labels.txt`` and
``pretrained.json``). Torch-free to list; saving weights reads them with torch.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from shoal.errors import AlreadyExistsError, InputError, NetworkError, NotFoundError
from shoal.store import Store, check_name

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
_INFO = "pretrained.json"


# -- network files -----------------------------------------------------------------------------------
def network_file(store: Store, file_name: str) -> Path:
    """Return the path of an uploaded network file, or raise NotFoundError listing the uploaded ones."""
    folder = store.assets("network", create=False)
    path = folder / os.path.basename(file_name)
    if not file_name.endswith(".py") or not path.is_file():
        known = ", ".join(p.name for p in sorted(folder.glob("*.py"))) or "none yet"
        raise NotFoundError(f"no uploaded network file {file_name!r} (uploaded: {known})")
    return path


def save_network_file(store: Store, file_name: str, data: bytes) -> dict[str, Any]:
    """Keep a network definition (``file_name`` already safe), after checking it is Python defining ``create_network``.

    The file is not run here; a training imports it (it is the user's own code).

    Raises:
        InputError: the name does not end in ``.py``.
        NetworkError: not valid Python, or no ``create_network`` function.
    """
    from shoal.networks.user_file import FACTORY

    if not file_name.endswith(".py"):
        raise InputError(f"a network file must be a Python file ending in .py, got {file_name!r}")
    try:
        tree = ast.parse(data.decode("utf-8"), filename=file_name)
    except (UnicodeDecodeError, SyntaxError) as exc:
        raise NetworkError(f"{file_name!r} is not valid Python: {exc}") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == FACTORY for n in tree.body):
        raise NetworkError(f"{file_name!r} defines no '{FACTORY}(num_classes, channels)' function; define one that "
                           "returns your nn.Module")
    path = store.assets("network") / file_name
    path.write_bytes(data)
    return {"file": file_name, "network": str(path)}


def list_network_files(store: Store) -> list[dict[str, Any]]:
    """The uploaded network files: ``file``, ``network`` (its path) and ``size``."""
    return [{"file": p.name, "network": str(p), "size": p.stat().st_size}
            for p in sorted(store.assets("network", create=False).glob("*.py"))]


# -- pretrained weights --------------------------------------------------------------------------------
def pretrained_info(store: Store, name: str) -> dict[str, Any]:
    """What ``pretrained.json`` records of uploaded weights, or NotFoundError listing the uploaded ones."""
    folder = store.assets("pretrained", create=False)
    meta = folder / name / _INFO
    if not meta.is_file():
        known = ", ".join(p["name"] for p in list_pretrained(store))
        raise NotFoundError(f"no uploaded pretrained weights named {name!r} (uploaded: {known or 'none yet'})")
    return json.loads(meta.read_text())


def list_pretrained(store: Store) -> list[dict[str, Any]]:
    """Every uploaded set of weights, by name."""
    folder = store.assets("pretrained", create=False)
    return [json.loads((p / _INFO).read_text()) for p in sorted(folder.iterdir() if folder.is_dir() else [])
            if not p.name.startswith(".") and (p / _INFO).is_file()]  # a dot-folder is an upload a kill cut short


def save_pretrained(store: Store, *, name: str, architecture: str, upload: Path, filename: str,
                    labels: list[str]) -> dict[str, Any]:
    """Keep uploaded weights for ``architecture`` (checked to be a readable state dict, never unpickled).

    ``upload`` is moved into the store. Returns what :func:`pretrained_info` will read.

    Raises:
        AlreadyExistsError: weights of that name exist.
        NetworkError: an unknown architecture (with close matches), a file that is not a
            ``.safetensors``/``.pth``/``.pt`` state dict.
    """
    from shoal.networks import get_spec, read_weights

    check_name(name, "pretrained weights")
    folder = store.assets("pretrained") / name
    if folder.exists():
        raise AlreadyExistsError(f"pretrained weights named {name!r} already exist; choose another name or delete them")
    get_spec(architecture)
    suffix = Path(filename).suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise NetworkError(f"weights must be a .safetensors, .pth or .pt file, got {filename!r}")
    checked = upload.with_suffix(suffix)
    os.replace(upload, checked)
    state = read_weights(checked)  # refuses pickled objects, damaged files, non-state-dicts
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        target = staging / f"weights{suffix}"
        os.replace(checked, target)
        if labels:
            (staging / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        info = {"name": name, "architecture": architecture, "file": filename, "tensors": len(state),
                "parameters": int(sum(t.numel() for t in state.values())), "labels": labels,
                "path": str(folder / target.name), "created": time.time()}
        (staging / _INFO).write_text(json.dumps(info, indent=2))
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def delete_pretrained(store: Store, name: str) -> None:
    """Remove uploaded weights (NotFoundError when there are none of that name)."""
    pretrained_info(store, name)
    folder = store.assets("pretrained") / name
    # Out of the way first: a kill in the middle of deleting leaves no half-deleted set under its name.
    aside = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    os.replace(folder, aside / name)
    shutil.rmtree(aside)
