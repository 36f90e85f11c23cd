"""Listing the networks is data: no torch, no torchvision, and the same answers torch would give."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shoal.networks.hub import hub_cache_path, hub_dir
from waiting import GENEROUS_S


def test_listing_the_networks_imports_neither_torch_nor_torchvision(tmp_path):
    code = (
        "import json, sys\n"
        "from shoal.networks import list_networks\n"
        "specs = list_networks()\n"
        "print(json.dumps({'names': [s.name for s in specs], 'offline': [s.pretrained_offline for s in specs],\n"
        "                  'heavy': sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules)}))\n"
    )
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"cached")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GENEROUS_S,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                               "TORCH_HOME": str(tmp_path / "torch")})
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert listed["heavy"] == []
    offline = dict(zip(listed["names"], listed["offline"]))
    assert offline["alexnet"] is True and offline["googlenet"] is False and offline["lenet"] is False


@pytest.mark.parametrize("name", ["alexnet", "googlenet"])
def test_the_stored_weights_url_is_torchvisions(name):
    pytest.importorskip("torchvision")
    from torchvision.models import get_weight

    from shoal.networks import resolve_network

    network = resolve_network(name)
    assert network.pretrained_url() == get_weight(network.weights_name).url


@pytest.mark.parametrize("env", [
    {"TORCH_HOME": "/tmp/th"},
    {"XDG_CACHE_HOME": "/tmp/xdg"},
    {"TORCH_HOME": "~/th", "XDG_CACHE_HOME": "/tmp/xdg"},
    {},
])
def test_the_hub_folder_is_torchs_own_without_importing_torch(env):
    """torch's rule, asked of torch in a fresh process, against ours in another one without torch."""
    pytest.importorskip("torch")
    base = {k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")}
    run = dict(capture_output=True, text=True, timeout=GENEROUS_S,
               env={**base, **env, "PYTHONPATH": os.pathsep.join(sys.path)})
    torch_says = subprocess.run([sys.executable, "-c", "import torch.hub; print(torch.hub.get_dir())"], **run)
    ours = subprocess.run([sys.executable, "-c", "import sys; from shoal.networks.hub import hub_dir; "
                           "print(hub_dir()); assert 'torch' not in sys.modules"], **run)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == torch_says.stdout


def test_the_cache_path_is_the_file_name_in_the_hub_checkpoints(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if "torch.hub" in sys.modules:  # torch asked, as it is once imported
        monkeypatch.setattr(sys.modules["torch.hub"], "_hub_dir", None)
    assert hub_dir() == tmp_path / "hub"
    assert hub_cache_path("https://h/x/alexnet-owt-7be5be79.pth?v=1") == tmp_path / "hub" / "checkpoints" / \
        "alexnet-owt-7be5be79.pth"
