"""Unpacking a DIGITS model archive, zip or tarball alike (links and unsafe paths: test_caffe_import.py)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from shoal.importers.caffe.errors import CaffeError
from shoal.importers.caffe.sources import MAX_MEMBERS, unpack

FILES = {"model/deploy.prototxt": b"name: 'net'", "model/snapshot.caffemodel": b"\x00weights", "model/labels.txt": b"a\nb\n"}


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


MAKERS = {"zip": (make_zip, "m.zip"), "tar": (make_tar, "m.tar.gz")}


@pytest.mark.parametrize("kind", MAKERS)
def test_an_archive_unpacks_to_the_folder_holding_its_files(tmp_path, kind):
    make, name = MAKERS[kind]
    folder = unpack(make(tmp_path / name, FILES), tmp_path / "out")
    assert folder == tmp_path / "out" / "model"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {k.split("/")[1]: v for k, v in FILES.items()}


@pytest.mark.parametrize("kind", MAKERS)
def test_more_members_than_a_model_has_are_refused(tmp_path, kind):
    make, name = MAKERS[kind]
    crowded = make(tmp_path / name, {f"m/{i}.txt": b"" for i in range(MAX_MEMBERS + 1)})
    with pytest.raises(CaffeError, match=rf"^archive '{name}' has {MAX_MEMBERS + 1} members; a model has a handful$"):
        unpack(crowded, tmp_path / "out")
    assert not (tmp_path / "out" / "m").exists()  # refused before anything is written
