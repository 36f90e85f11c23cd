"""training.sweep() and schedules.preview(): the web app's sweeps and rate preview, as library calls."""

from __future__ import annotations

import pytest

from shoal.errors import ConfigError
from shoal.training import TrainConfig, learning_rate
from shoal.training.schedules import BACKBONE_LR_SCALE, preview
from shoal.training.sweep import sweep


def test_a_sweep_names_each_combination_and_resolves_it() -> None:
    configs = sweep(dataset="pets", lr=[0.1, 0.01], batch_size=[8, 16])
    assert [c.name for c in configs] == ["pets-lenet-lr0.1-bs8", "pets-lenet-lr0.1-bs16", "pets-lenet-lr0.01-bs8",
                                         "pets-lenet-lr0.01-bs16"]
    assert all(c.epochs == 30 and c.network == "lenet" for c in configs)  # resolved: the scratch defaults
    one = sweep(dataset="pets", name="mine", lr=0.05)
    assert [(c.name, c.lr) for c in one] == [("mine", 0.05)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": []}, "a sweep needs at least one lr value"),
    ({"lr": [0.1, 0.1]}, "the sweep repeats a combination"),
    ({"lr": [0.1, 50]}, "lr must be a number > 0 and <= 10, got 50"),
    ({"name": "bad name"}, "bad name"),
])
def test_a_sweep_refuses_before_returning_anything(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep(dataset="pets", **kwargs)


def test_the_preview_follows_the_policy_from_scratch() -> None:
    out = preview(TrainConfig(dataset="d", lr_policy="step", epochs=30, lr=0.1, step_size=10, gamma=0.5))
    assert out["fitted"] is False and out["backbone_scale"] == 1.0 and out["epochs"] == 30
    assert out["points"][0] == {"epoch": 0.0, "lr": 0.1} and out["points"][-1]["epoch"] == 30
    for p in out["points"][::37]:
        assert p["lr"] == pytest.approx(learning_rate("step", p["epoch"], epochs=30, base_lr=0.1, step_size=10,
                                                      gamma=0.5))


def test_the_preview_of_a_fine_tune_uses_its_defaults_and_the_backbones_share() -> None:
    end_to_end = preview(TrainConfig(dataset="d", pretrained=True, freeze="none"))
    assert end_to_end["epochs"] == 5 and end_to_end["lr"] == 0.01  # END_TO_END_DEFAULTS, not the scratch ones
    assert end_to_end["backbone_scale"] == BACKBONE_LR_SCALE
    head_sgd = preview(TrainConfig(dataset="d", pretrained=True, head="sgd"))
    assert head_sgd["lr"] == 0.05 and head_sgd["backbone_scale"] == 1.0  # the backbone is frozen


def test_a_fitted_head_has_no_rate_to_preview() -> None:
    assert preview(TrainConfig(dataset="d", pretrained=True)) == {
        "policy": "cosine", "epochs": None, "lr": None, "backbone_scale": None, "fitted": True, "points": []}
