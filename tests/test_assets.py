"""shoal.assets: uploaded network files and pretrained weights kept in the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import assets
from shoal.errors import AlreadyExistsError, InputError, NetworkError, NotFoundError
from shoal.store import Store

NET = b"import torch\n\ndef create_network(num_classes, channels):\n    return torch.nn.Linear(channels, num_classes)\n"


def test_network_files_are_checked_kept_and_listed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert assets.list_network_files(store) == []
    saved = assets.save_network_file(store, "tiny.py", NET)
    assert Path(saved["network"]) == tmp_path / "networks" / "tiny.py"
    assert [f["file"] for f in assets.list_network_files(store)] == ["tiny.py"]
    assert assets.network_file(store, "tiny.py") == tmp_path / "networks" / "tiny.py"
    with pytest.raises(NotFoundError, match=r"no uploaded network file 'other.py' \(uploaded: tiny.py\)"):
        assets.network_file(store, "other.py")
    with pytest.raises(InputError, match="must be a Python file ending in .py"):
        assets.save_network_file(store, "net.txt", NET)
    with pytest.raises(NetworkError, match="is not valid Python"):
        assets.save_network_file(store, "broken.py", b"def (")
    with pytest.raises(NetworkError, match="defines no 'create_network"):
        assets.save_network_file(store, "empty.py", b"x = 1\n")


def test_pretrained_weights_are_read_as_a_state_dict_kept_and_deleted(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from shoal import networks

    store = Store(tmp_path)
    upload = tmp_path / "upload.bin"
    save_file(networks.create("lenet", 3, channels=1).state_dict(), str(upload))
    info = assets.save_pretrained(store, name="mine", architecture="lenet", upload=upload, filename="w.safetensors",
                                  labels=["a", "b", "c"])
    assert info["tensors"] > 0 and info["labels"] == ["a", "b", "c"] and Path(info["path"]).is_file()
    assert assets.list_pretrained(store) == [info] and assets.pretrained_info(store, "mine") == info
    assert (tmp_path / "pretrained" / "mine" / "labels.txt").read_text() == "a\nb\nc\n"
    again = tmp_path / "again.bin"
    torch.save({"w": torch.zeros(1)}, again)
    with pytest.raises(AlreadyExistsError, match="'mine' already exist"):
        assets.save_pretrained(store, name="mine", architecture="lenet", upload=again, filename="w.pt", labels=[])
    with pytest.raises(NetworkError, match="must be a .safetensors, .pth or .pt file"):
        assets.save_pretrained(store, name="other", architecture="lenet", upload=again, filename="w.bin", labels=[])
    # An upload a kill cut short (its staging folder, info written, not yet moved in) is not listed.
    cut = tmp_path / "pretrained" / ".cut-x1y2"
    cut.mkdir()
    (cut / "pretrained.json").write_text((tmp_path / "pretrained" / "mine" / "pretrained.json").read_text())
    assert [i["name"] for i in assets.list_pretrained(store)] == ["mine"]
    cut.joinpath("pretrained.json").unlink()
    cut.rmdir()
    assets.delete_pretrained(store, "mine")
    with pytest.raises(NotFoundError, match="no uploaded pretrained weights named 'mine' \\(uploaded: none yet\\)"):
        assets.pretrained_info(store, "mine")
    assert list((tmp_path / "pretrained").iterdir()) == []
