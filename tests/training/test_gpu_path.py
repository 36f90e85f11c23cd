"""The GPU path's decisions, checked without a GPU: autocast type and GradScaler, cuda:N devices."""

from __future__ import annotations

import pytest
import torch

from shoal.errors import ConfigError, TrainingError
from shoal.machine import check_device, gpu_index, torch_device
from shoal.training import distributed
from shoal.training.config import TrainConfig
from shoal.training.loop import _rank_device, amp_dtype

CUDA = torch.device("cuda", 0)


def test_auto_is_bf16_on_a_gpu_with_it_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype("auto", CUDA) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype("auto", CUDA) is torch.float16  # the loop adds a GradScaler for it
    assert amp_dtype("float32", CUDA) is None and amp_dtype("fp16", CUDA) is torch.float16
    assert amp_dtype("auto", torch.device("mps")) is None


def test_fp16_needs_cuda():
    with pytest.raises(TrainingError, match=r"precision 'fp16' needs a CUDA GPU \(this run is on cpu\)"):
        amp_dtype("fp16", torch.device("cpu"))
    assert amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16


def test_the_scaler_is_a_pass_through_unless_fp16():
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype("bf16", torch.device("cpu")) is torch.float16)
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    loss = (weight * 2).sum()
    assert scaler.scale(loss) is loss
    loss.backward()
    scaler.step(optimizer)
    scaler.update()
    assert weight.tolist() == [0.0, 0.0]


def test_cuda_n_devices():
    assert gpu_index("cuda:3") == 3 and gpu_index("cuda") is None and gpu_index("cuda:x") is None
    check_device("cuda:12")
    assert TrainConfig(dataset="d", network="lenet", device="cuda:1").device == "cuda:1"
    with pytest.raises(ConfigError, match=r"device must be one of auto, cpu, cuda, cuda:N \(the GPU numbered N\), "
                                          r"mps, got 'cuda:x'"):
        TrainConfig(dataset="d", network="lenet", device="cuda:x")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without GPUs")
def test_a_gpu_this_machine_lacks_is_refused():
    with pytest.raises(ConfigError, match=r"device 'cuda:1' was asked for but torch sees 0 CUDA GPUs; use device cpu"):
        torch_device("cuda:1")


def test_one_named_gpu_cannot_take_a_data_parallel_run():
    two = distributed.World(rank=0, size=2, local_rank=0)
    with pytest.raises(TrainingError, match=r"--device cuda:1 names one GPU, and a data-parallel run takes one GPU "
                                            r"per process"):
        _rank_device("cuda:1", two)
    assert _rank_device("cuda:1", distributed.World(rank=0, size=1, local_rank=0)) == torch.device("cuda", 1)
