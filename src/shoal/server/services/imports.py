"""Importing a model from an upload: a DIGITS "Download Model" archive or a zip of Caffe files.

The archive gets the dataset uploads' guards (:mod:`shoal.server.security`: the upload size,
the number of members, the unpacked size, the compression ratio, no absolute or ``..`` paths,
no links or devices); the import itself is the library's (:func:`shoal.importers.caffe.import_caffe`),
which checks every member again when it unpacks a tarball.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from shoal.errors import AlreadyExistsError, InputError
from shoal.server.config import Settings
from shoal.server.security import check_archive_listing, member_parts, safe_extract
from shoal.server.services.assets import upload_dir
from shoal.store import Store, check_name

ZIP_MAGIC = b"PK\x03\x04"


def archive_kind(path: Path) -> str:
    """``zip`` or ``tar`` (plain, gzip, bzip2 or xz), from the file's bytes, not its name.

    Raises:
        InputError: neither.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise InputError("the upload is neither a zip nor a tar.gz archive; upload the DIGITS 'Download Model' "
                     "archive, or a zip of the deploy .prototxt, the .caffemodel and their mean and labels files")


def check_tar(path: Path, settings: Settings) -> None:
    """The dataset uploads' limits and path rules, applied to a tarball's members before it is unpacked.

    Raises:
        InputError: too many members, too large unpacked, an unsafe path, a link or a special file.
    """
    try:
        with tarfile.open(path) as tf:
            members = tf.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"the tar archive cannot be read ({exc}); pack the model's files again and upload that") from None
    check_archive_listing("archive", len(members), sum(m.size for m in members if m.isfile()), settings)
    for member in members:
        name = member.name
        member_parts(name, what="archive", remedy="pack the model's files with relative paths")
        if not (member.isfile() or member.isdir()) or stat.S_ISLNK(member.mode):
            raise InputError(f"the archive member {name!r} is a link or special file; pack plain files only")


def import_upload(store: Store, settings: Settings, *, name: str, archive: Path, mean: str | None = None,
                  scale: float | None = None) -> dict[str, Any]:
    """Import the uploaded archive as the model ``name``; return what the import made.

    Raises:
        InputError: the archive is of another kind or unsafe.
        AlreadyExistsError: the name is taken.
        CaffeError: what the importer refuses (one line each).
    """
    from shoal.importers.caffe import import_caffe

    check_name(name, "model")
    if store.exists("model", name):
        raise AlreadyExistsError(f"a model named {name!r} already exists: choose another name, or delete it first")
    kind = archive_kind(archive)
    work = Path(tempfile.mkdtemp(prefix=f"import-{name}-", dir=upload_dir(store)))
    try:
        if kind == "zip":
            root = safe_extract(archive, work / "files", settings)
            entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
            source = entries[0] if len(entries) == 1 and entries[0].is_dir() else root
        else:
            check_tar(archive, settings)
            source = work / "model.tar.gz"
            shutil.copyfile(archive, source)
        done = import_caffe(source, name=name, mean=mean or None, scale=scale, store=store)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"name": done.name, "labels": list(done.card.labels), "notes": done.notes, "onnx_diff": done.onnx_diff,
            "input": {"size": [done.card.input.width, done.card.input.height], "channels": done.card.input.channels}}
