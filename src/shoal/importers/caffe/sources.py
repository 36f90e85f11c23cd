"""Finding the files of a Caffe model: a DIGITS job folder or "Download Model" archive, or a deploy prototxt.

Archives (``.tar.gz``, ``.tgz``, ``.tar``, ``.tar.bz2``, ``.zip``) are unpacked into a
work folder, member by member, after every member is checked: no absolute paths, no ``..``,
no links or devices, at most one folder level, a size cap. Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from collections.abc import Callable
from typing import IO, Any

from shoal.importers.caffe.errors import CaffeError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".zip")
MAX_ARCHIVE_BYTES = 4 * 1024**3  # unpacked; the largest DIGITS classification models are ~250 MB
MAX_MEMBERS = 200


@dataclass(frozen=True)
class ModelFiles:
    """What an import reads: the deploy net and weights, and what DIGITS put beside them."""

    deploy: Path
    weights: Path
    mean: Path | None = None
    labels: Path | None = None
    train_val: Path | None = None
    info: dict[str, Any] | None = None
    folder: Path | None = None


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _check_member(name: str, archive: Path) -> PurePosixPath:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in member.parts:
        raise CaffeError(f"archive {archive.name!r} has the unsafe member {name!r} (an absolute path or '..'); "
                         "shoal does not unpack it")
    if len(member.parts) > 2:
        raise CaffeError(f"archive {archive.name!r} has the nested member {name!r}; a DIGITS model archive is flat "
                         "(or one folder) — repack the model's files at the top")
    return member


_Member = tuple[str, str, int, Callable[[], "IO[bytes] | None"]]  # name, dir/file/other, size, open for reading


def _listing(archive: Path, stack: contextlib.ExitStack) -> list[_Member]:
    """The members of a zip or tarball alike, the archive kept open on ``stack`` while they are read.

    Raises:
        CaffeError: more members than a model has.
    """
    members: list[_Member]
    if archive.name.lower().endswith(".zip"):
        zf = stack.enter_context(zipfile.ZipFile(archive))
        members = [(i.filename, "other" if (i.external_attr >> 16) & 0o170000 == 0o120000 else "dir" if i.is_dir()
                    else "file", i.file_size, lambda i=i: zf.open(i)) for i in zf.infolist()]
    else:
        tf = stack.enter_context(tarfile.open(archive))
        members = [(i.name, "dir" if i.isdir() else "file" if i.isfile() else "other", i.size,
                    lambda i=i: tf.extractfile(i)) for i in tf.getmembers()]
    if len(members) > MAX_MEMBERS:
        raise CaffeError(f"archive {archive.name!r} has {len(members)} members; a model has a handful")
    return members


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack a model archive into ``dest`` (checked member by member); return the folder holding its files.

    Raises:
        CaffeError: an unsafe member (absolute, ``..``, link, device), nesting, too many or too large members,
            or an archive that cannot be read.
    """
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    try:
        with contextlib.ExitStack() as stack:
            for name, kind, size, read in _listing(archive, stack):
                member = _check_member(name, archive)
                if kind == "dir":
                    continue
                if kind != "file":
                    raise CaffeError(f"archive {archive.name!r} has {name!r}, a link or device rather than a file; "
                                     "shoal does not unpack it")
                total += size
                if total > MAX_ARCHIVE_BYTES:
                    raise CaffeError(f"archive {archive.name!r} unpacks to more than "
                                     f"{MAX_ARCHIVE_BYTES // 1024**3} GiB; that is not a classification model")
                target = dest.joinpath(*member.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                source = read()
                if source is None:
                    raise CaffeError(f"archive {archive.name!r}: {name!r} cannot be read")
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CaffeError(f"archive {archive.name!r} cannot be read: {exc}") from None
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _snapshot(folder: Path, info: dict[str, Any] | None) -> Path:
    named = info.get("snapshot file") if info else None
    if isinstance(named, str) and (folder / Path(named).name).is_file():
        return folder / Path(named).name
    models = sorted(folder.glob("*.caffemodel"))
    if not models:
        h5 = sorted(folder.glob("*.caffemodel.h5"))
        if h5:
            raise CaffeError(f"{h5[0].name} holds HDF5 weights (.caffemodel.h5); shoal reads the protobuf "
                             ".caffemodel only — snapshot the model without snapshot_format: HDF5")
        raise CaffeError(f"no .caffemodel in {str(folder)!r}; put the trained weights beside the deploy prototxt")
    if len(models) == 1:
        return models[0]

    def iteration(p: Path) -> int:
        found = re.search(r"_iter_(\d+)\.caffemodel$", p.name)
        return int(found.group(1)) if found else -1

    best = max(models, key=iteration)
    if iteration(best) < 0:
        raise CaffeError(f"{str(folder)!r} holds several .caffemodel files ({', '.join(p.name for p in models)}); "
                         "give the deploy prototxt of one model in a folder of its own")
    return best


def _info(folder: Path) -> dict[str, Any] | None:
    path = folder / "info.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaffeError(f"{path.name} cannot be read: {exc}") from None
    if not isinstance(info, dict):
        raise CaffeError(f"{path.name} is not a JSON object; is this a DIGITS model?")
    framework = str(info.get("framework", "caffe")).lower()
    if framework != "caffe":
        raise CaffeError(f"this DIGITS model was trained with {info.get('framework')!r}, not Caffe; shoal imports "
                         "Caffe models")
    return info


def _beside(folder: Path, info: dict[str, Any] | None, key: str, default: str) -> Path | None:
    named = info.get(key) if info else None
    for candidate in ([Path(named).name] if isinstance(named, str) and named else []) + [default]:
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def find(path: Path, work: Path) -> ModelFiles:
    """The model's files under ``path`` (a job folder, an archive, a deploy prototxt or a caffemodel).

    Args:
        path: what the user gave.
        work: an empty folder to unpack an archive into.

    Raises:
        CaffeError: no such path, files missing, a non-Caffe DIGITS model, an unsafe archive.
    """
    path = path.expanduser()
    if not path.exists():
        raise CaffeError(f"{str(path)!r} does not exist; give a DIGITS job folder or model archive, or a deploy "
                         "prototxt with its .caffemodel beside it")
    if is_archive(path):
        path = unpack(path, work)
    if path.is_file() and path.name.endswith(".h5"):
        raise CaffeError(f"{path.name} holds HDF5 weights (.caffemodel.h5); shoal reads the protobuf .caffemodel "
                         "only — snapshot the model without snapshot_format: HDF5")
    if path.is_file() and path.suffix == ".prototxt":
        folder = path.parent
        info = _info(folder)
        return ModelFiles(path, _snapshot(folder, info), _beside(folder, info, "mean file", "mean.binaryproto"),
                          _beside(folder, info, "labels file", "labels.txt"),
                          _beside(folder, info, "train_val file", "train_val.prototxt"), info, folder)
    if path.is_file() and path.suffix == ".caffemodel":
        folder = path.parent
        deploy = folder / "deploy.prototxt"
        if not deploy.is_file():
            raise CaffeError(f"no deploy.prototxt beside {path.name}; give the deploy prototxt's path instead")
        info = _info(folder)
        return ModelFiles(deploy, path, _beside(folder, info, "mean file", "mean.binaryproto"),
                          _beside(folder, info, "labels file", "labels.txt"),
                          _beside(folder, info, "train_val file", "train_val.prototxt"), info, folder)
    if path.is_dir():
        info = _info(path)
        deploy = _beside(path, info, "deploy file", "deploy.prototxt")
        if deploy is None:
            raise CaffeError(f"no deploy.prototxt in {str(path)!r}; is it a DIGITS model folder? (or give the "
                             "deploy prototxt's path)")
        return ModelFiles(deploy, _snapshot(path, info), _beside(path, info, "mean file", "mean.binaryproto"),
                          _beside(path, info, "labels file", "labels.txt"),
                          _beside(path, info, "train_val file", "train_val.prototxt"), info, path)
    raise CaffeError(f"{str(path)!r} is not a DIGITS job folder, a model archive ({', '.join(ARCHIVE_SUFFIXES)}), "
                     "a .prototxt or a .caffemodel")
