"""The model bundle: one self-describing artefact per trained model.

A bundle is a directory, or the same files zipped into a ``.shoal`` file:

- ``shoal.json``: the manifest (architecture, labels, input and normalisation, training
  configuration, metric history, versions);
- ``model.onnx``: softmax probabilities from float32 NCHW pixels 0..255, and (format 2) the
  unfamiliar score and verdict (:mod:`shoal.bundle.unfamiliar`);
- ``model.safetensors``: the weights, normalisation buffers included;
- ``labels.txt``: the class names, one per line, index order.

Nothing in it is a pickle. Reading a bundle (this module) needs neither torch nor the
dataset; writing one (:func:`export`) needs torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.bundle.card import InputSpec, ModelCard, Normalization
from shoal.errors import BundleError

if TYPE_CHECKING:
    from shoal.store import Store

# 2: the graph also outputs unfamiliar_score and unfamiliar; the manifest gains "unfamiliar" and "head".
FORMAT_VERSION = 2
SUFFIX = ".shoal"
MANIFEST = "shoal.json"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "labels.txt"
REQUIRED = (MANIFEST, ONNX_FILE, WEIGHTS_FILE, LABELS_FILE)

__all__ = ["FORMAT_VERSION", "SUFFIX", "Bundle", "InputSpec", "ModelCard", "Normalization", "export",
           "open_bundle", "zip_bundle"]


@dataclass(frozen=True)
class Bundle:
    """A bundle opened for reading: its manifest, its checked model card, and its files on demand."""

    path: Path
    manifest: dict[str, Any]
    card: ModelCard

    @property
    def labels(self) -> list[str]:
        """The class names, in the model's output order."""
        return list(self.card.labels)

    def read(self, name: str) -> bytes:
        """Return the bytes of one file of the bundle (directory or ``.shoal`` zip).

        Raises:
            BundleError: the file is missing or unreadable.
        """
        return _read(self.path, name)


def _read(path: Path, name: str) -> bytes:
    try:
        if path.is_dir():
            return (path / name).read_bytes()
        with zipfile.ZipFile(path) as z:
            return z.read(name)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise BundleError(f"bundle {str(path)!r} has no readable {name!r}: {exc}") from exc


def open_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open a bundle directory or ``.shoal`` file and check its manifest.

    Args:
        path: a bundle folder or a ``.shoal`` file.

    Returns:
        The :class:`Bundle`, with its model card read and checked.

    Raises:
        BundleError: if the path is missing, is not a bundle, lacks a file, was written by a
            newer shoal (format version), or its model card is incomplete or unusable.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise BundleError(f"no model bundle at {str(path)!r}: give a bundle folder or a .shoal file "
                          "(see 'shoal model list' for trained models)")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
    else:
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except zipfile.BadZipFile as exc:
            raise BundleError(f"{str(path)!r} is not a shoal bundle (not a folder, nor a .shoal zip)") from exc
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise BundleError(f"{str(path)!r} is not a complete shoal bundle: missing {', '.join(missing)}")
    try:
        manifest = json.loads(_read(path, MANIFEST))
    except json.JSONDecodeError as exc:
        raise BundleError(f"the manifest of {str(path)!r} is not valid JSON: {exc}") from exc
    version = manifest.get("format")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(f"bundle {str(path)!r} has format {version!r}; this shoal reads format "
                          f"{FORMAT_VERSION} or older — upgrade shoal (pip install -U shoal)")
    return Bundle(path, manifest, ModelCard.from_dict(manifest, str(path)))


def zip_bundle(folder: Path, out: Path) -> Path:
    """Zip a bundle directory into a ``.shoal`` file (written atomically, through a temporary file of its own)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a bundle is an ordinary file to share
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name in sorted(p.name for p in folder.iterdir() if p.is_file()):
                z.write(folder / name, name)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh folder to write a bundle's files into; when the block ends without error it becomes ``out``.

    ``out`` is a folder (replaced whole) or a ``.shoal`` file (zipped); a reader never sees half a bundle,
    and a process killed at any moment leaves a whole bundle or, for the instant between two renames, none.

    Raises:
        BundleError: ``out`` is a folder holding other files than a bundle's, or a file not ending in ``.shoal``
            (replacing it would delete them).
    """
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shoal-bundle-", dir=out.parent) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        yield staging
        if out.suffix == SUFFIX:
            zip_bundle(staging, out)
        else:
            replace_folder(out, staging, aside=Path(tmp) / "old")


def replace_folder(target: Path, new: Path, *, aside: Path) -> None:
    """Put folder ``new`` in place of ``target``: the old one is first moved to ``aside`` (a path on the
    same file system, removed by the caller), so a kill never leaves a half-deleted folder at ``target``."""
    if target.exists():
        os.replace(target, aside)
    os.replace(new, target)


def own_files(folder: Path) -> set[str]:
    """The names in ``folder`` other than what file managers leave in every folder (``.DS_Store``...)."""
    return {p.name for p in folder.iterdir()
            if not (p.is_file() and (p.name in _FILE_MANAGER_LITTER or p.name.startswith("._")))}


_FILE_MANAGER_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}


def _check_replaceable(out: Path) -> None:
    if out.is_dir():
        names = own_files(out)
        if MANIFEST not in names and not names <= set(REQUIRED):
            raise BundleError(f"{str(out)!r} is a folder holding other files than a bundle's "
                              f"({', '.join(sorted(names - set(REQUIRED))[:3])}): writing the bundle there would "
                              f"delete them; give a new folder, e.g. {str(out / 'bundle')!r}, or a path ending in "
                              f"{SUFFIX}")
    elif out.exists() and out.suffix != SUFFIX:
        raise BundleError(f"{str(out)!r} is a file, not a bundle: give a new folder, or a path ending in {SUFFIX}")


def manifest(name: str, card: ModelCard, *, epoch: int, history: list[dict[str, Any]], training: dict[str, Any],
             onnx: dict[str, Any], unfamiliar: dict[str, Any], versions: dict[str, str],
             head: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``shoal.json`` of a bundle.

    Args:
        name: the model's name.
        card: what the model takes.
        epoch: the epoch the weights are from (1 for a fitted head).
        history: the metric records (one per validated epoch).
        training: the resolved training configuration.
        onnx: the graph's opset, inputs, outputs and the check against the reference it was compared with.
        unfamiliar: the detector's settings (:meth:`Unfamiliar.to_manifest`), or ``{"reason": why there is none}``.
        versions: package versions that wrote the bundle.
        head: for a fitted head, what the fit did (method, strength, cross-validation curve).
    """
    from shoal import __version__

    return {
        "format": FORMAT_VERSION,
        "shoal_version": __version__,
        "name": name,
        **card.to_dict(),
        "epoch": epoch,
        "metrics": next((h for h in history if h.get("epoch") == epoch), None),
        "history": history,
        "training": training,
        "head": head,
        "unfamiliar": unfamiliar,
        "onnx": onnx,
        "versions": {"shoal": __version__, **versions},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def export(name: str, *, epoch: int | str = "best", store: Store | None = None,
           out: str | os.PathLike[str] | None = None, on_event: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Write a model's bundle (a folder, or a ``.shoal`` file when ``out`` ends so).

    A model whose head was fitted (``--head fit``) has one result and its bundle already: it is
    copied, without torch. Otherwise see :func:`shoal.bundle.writer.export_model` (torch).

    Raises:
        BundleError: an epoch was asked of a fitted head, or its bundle is missing.
    """
    from shoal.models import ModelFolder

    folder = ModelFolder.of(name, store=store)
    config = folder.read_config()
    if config.get("head") == "fit" or config.get("imported"):  # one result, its bundle already written
        if epoch not in ("best", "last"):
            kind = "was imported" if config.get("imported") else "has a fitted head"
            raise BundleError(f"model {name!r} {kind}: one result, no epochs; export it without --epoch")
        if not folder.has_bundle():
            raise BundleError(f"model {name!r} has no bundle yet: its fit did not finish; train it anew")
        target = Path(out) if out is not None else folder.bundle_path
        if target.resolve() != folder.bundle_path.resolve():
            with staged(target) as staging:
                for file in folder.bundle_path.iterdir():
                    shutil.copy2(file, staging / file.name)
        return target
    from shoal.bundle.writer import export_model

    return export_model(name, epoch=epoch, store=store, out=out, on_event=on_event)
