"""The resume point keeps what a resumed run needs to continue as if it had not stopped."""

from __future__ import annotations

import torch

from shoal.models import ModelFolder
from shoal.networks.weights import load_weights, save_weights
from shoal.training import snapshots


class _Scaler:
    """Stands in for an fp16 run's GradScaler (which needs CUDA): its state is the loss scale it has learned."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "growth_tracker": 7}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale = state["scale"]


def _parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Generator]:
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(0)


def test_the_fp16_loss_scale_survives_a_resume(tmp_path):
    folder = ModelFolder(tmp_path)
    model, optimizer, generator = _parts()
    snapshots.save_state(folder, model, optimizer, generator, {"epoch": 3}, _Scaler(512.0))

    resumed = _Scaler(65536.0)  # a fresh scaler starts high and would waste steps finding its scale again
    state = snapshots.restore(snapshots.read_state(folder), folder, *_parts(), resumed)
    assert state == {"epoch": 3} and resumed.scale == 512.0


def test_a_resume_point_without_a_scaler_leaves_a_fresh_one_alone(tmp_path):
    folder = ModelFolder(tmp_path)
    snapshots.save_state(folder, *_parts(), {"epoch": 1})  # float32 or bf16: no scaler
    fresh = _Scaler(65536.0)
    snapshots.restore(snapshots.read_state(folder), folder, *_parts(), fresh)
    assert fresh.scale == 65536.0


def _best_epoch(folder: ModelFolder) -> int:
    return load_weights(folder.best_path, torch.nn.Linear(3, 2))


def test_a_run_killed_after_a_new_best_and_before_its_resume_point_keeps_the_best_it_resumes_with(tmp_path):
    folder = ModelFolder(tmp_path)
    model, optimizer, generator = _parts()
    snapshots.stage_best(folder, model, 4)
    snapshots.save_state(folder, model, optimizer, generator, {"epoch": 5, "best": 4})
    assert _best_epoch(folder) == 4

    snapshots.stage_best(folder, model, 6)  # epoch 6 improved; the kill comes before its resume point
    save_weights(folder.snapshot(6), model, epoch=6)
    snapshots.settle(folder, snapshots.read_state(folder)["state"])
    assert _best_epoch(folder) == 4, "the bundle would be of an epoch the resumed run does not call best"
    assert [p.name for p in tmp_path.iterdir() if "next" in p.name] == []
    assert folder.snapshots() == {}, "an export of epoch 6 would be of weights the resumed run trains again"

    # Killed after the resume point that names epoch 6 and before the weights were promoted: they are.
    snapshots.stage_best(folder, model, 6)
    torch.save({**snapshots.read_state(folder), "state": {"epoch": 6, "best": 6}}, folder.state_path)
    snapshots.settle(folder, snapshots.read_state(folder)["state"])
    assert _best_epoch(folder) == 6


def test_the_epochs_trained_are_read_from_either_format_torch_saves(tmp_path):
    folder = ModelFolder(tmp_path)
    snapshots.save_state(folder, *_parts(), {"epoch": 2, "history": [{"epoch": 1, "val_accuracy": 1.0}, {"epoch": 2}]})
    assert snapshots.trained(folder) == (2, False)  # the last epoch was not validated
    legacy = snapshots.read_state(folder)  # torch's pre-zip format cannot be mapped: it is read whole
    torch.save(legacy, folder.state_path, _use_new_zipfile_serialization=False)
    assert snapshots.trained(folder) == (2, False)
