"""Training options: validation, layering, defaults per path, learning-rate policies."""

from __future__ import annotations

import json
import math

import pytest

from shoal.config import build
from shoal.errors import ConfigError
from shoal.training import POLICIES, TrainConfig, learning_rate, schedule


def test_defaults_differ_between_scratch_and_finetune():
    scratch = TrainConfig(dataset="d").resolved()
    assert (scratch.network, scratch.freeze, scratch.lr, scratch.epochs) == ("lenet", "none", 0.01, 30)
    tuned = TrainConfig(dataset="d", pretrained=True).resolved()
    assert (tuned.network, tuned.freeze, tuned.head, tuned.lr, tuned.epochs) == (
        "efficientnet_lite0", "backbone", "fit", None, None)  # a fitted head has no rate and no epochs
    assert tuned.name == "d-efficientnet_lite0"
    sgd = TrainConfig(dataset="d", pretrained=True, head="sgd").resolved()
    assert (sgd.head, sgd.lr, sgd.epochs) == ("sgd", 0.05, 30)
    end_to_end = TrainConfig(dataset="d", pretrained=True, freeze="none").resolved()
    assert (end_to_end.head, end_to_end.lr, end_to_end.epochs) == ("sgd", 0.01, 5)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("epochs", 0, "epochs must be an int from 1 to 100000, got 0"),
    ("lr", -1.0, "lr must be a number > 0 and <= 10, got -1.0"),
    ("lr", math.inf, "lr must be a number > 0 and <= 10, got inf"),
    ("lr", 11, "lr must be a number > 0 and <= 10, got 11"),
    ("weight_decay", math.inf, "weight_decay must be a number from 0 to 1, got inf"),
    ("gamma", math.inf, "gamma must be a number from 0 to 100, got inf"),
    ("power", math.nan, "power must be a number from 0 to 100, got nan"),
    ("step_size", math.inf, "step_size must be a number > 0 and <= 100000, got inf"),
    ("seed", 10**23, "seed must be an int from 0 to 4294967295, got 100000000000000000000000"),
    ("step_values", "nan,-1", "step_values must be epochs from 0 to 100000 at which multistep drops, "
                              "comma-separated (for example '10,20'), got 'nan,-1'"),
    ("step_values", "a,b", "step_values must be epochs from 0 to 100000 at which multistep drops, "
                           "comma-separated (for example '10,20'), got 'a,b'"),
    ("freeze", "²", "freeze must be 'none', 'backbone' or an int >= 0 (how many leading stages to freeze), got '²'"),
    ("solver", "adma", "solver must be one of sgd, nesterov, adam, adamw, adagrad, rmsprop, adadelta, got 'adma' (did you mean 'adam'?)"),
    ("lr_policy", "cosin", "did you mean 'cosine'?"),
    ("freeze", "head", "freeze must be 'none', 'backbone' or an int >= 0 (how many leading stages to freeze), got 'head'"),
    ("freeze", "bakcbone", "got 'bakcbone'; did you mean 'backbone'?"),
    ("momentum", 2.0, "momentum must be a number from 0 to 1, got 2.0"),
    ("device", "tpu", "device must be one of auto, cpu, cuda, cuda:N (the GPU numbered N), mps, got 'tpu'"),
])
def test_bad_values_name_the_option(option, value, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(dataset="d", **{option: value})
    assert message in str(info.value)


def test_layering_file_then_flags_and_typo_help(tmp_path):
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"dataset": "d", "epochs": 5, "lr": 0.1}))
    config = build(TrainConfig, file, lr=0.5, solver=None)
    assert (config.epochs, config.lr, config.solver) == (5, 0.5, "sgd")
    with pytest.raises(ConfigError, match="'epoch' is not a TrainConfig option; did you mean 'epochs'"):
        build(TrainConfig, None, dataset="d", epoch=3)


def test_gamma_of_a_dropping_policy_is_at_most_1():
    assert TrainConfig(dataset="d", lr_policy="inv", gamma=2.0).gamma == 2.0
    with pytest.raises(ConfigError) as info:
        TrainConfig(dataset="d", lr_policy="exp", gamma=2.0)
    assert str(info.value) == ("gamma must be at most 1 with lr_policy exp (it multiplies the learning rate at "
                               "each drop), got 2")


@pytest.mark.parametrize(("given", "read"), [
    ("10", (10.0,)), ("10,20", (10.0, 20.0)), (" 5 , 7.5 ", (5.0, 7.5)), ([10, 20], (10.0, 20.0)),
    ((3,), (3.0,)), (12, (12.0,)), ("", ()),
])
def test_step_values_accept_text_numbers_and_lists(given, read):
    assert TrainConfig(dataset="d", step_values=given).step_values == read


def test_freeze_is_read_once_by_the_config():
    assert TrainConfig(dataset="d", freeze="3").freeze == 3
    assert TrainConfig(dataset="d", freeze=" Backbone ").freeze == "backbone"
    assert TrainConfig(dataset="d", freeze=0).freeze == "none"


def test_one_key_policy_for_build_replace_and_stored_files(tmp_path):
    from shoal import __version__
    from shoal.config import from_dict, replace, to_dict

    config = TrainConfig(dataset="d", lr=0.1)
    assert replace(config, lr=None, epochs=4) == TrainConfig(dataset="d", lr=0.1, epochs=4)
    with pytest.raises(ConfigError, match="'epoch' is not a TrainConfig option; did you mean 'epochs'"):
        replace(config, epoch=4)
    stored = to_dict(config)
    assert from_dict(TrainConfig, stored) == config
    with pytest.raises(ConfigError, match="'lr_warmup' is not a TrainConfig option"):
        from_dict(TrainConfig, {**stored, "lr_warmup": 2})
    with pytest.raises(ConfigError) as info:
        from_dict(TrainConfig, {**stored, "lr_warmup": 2}, written_by="99.0")
    assert str(info.value) == (f"this TrainConfig was written by shoal 99.0, newer than this shoal ({__version__}), "
                               "and has options it does not know ('lr_warmup'): upgrade shoal (pip install -U shoal) "
                               "to read it")
    file = tmp_path / "run.json"
    file.write_text('{"dataset": "d", "lr": Infinity}')
    with pytest.raises(ConfigError, match="lr must be a number > 0 and <= 10, got inf"):
        build(TrainConfig, file)


def test_policies_follow_their_definitions():
    kw = dict(epochs=30, base_lr=0.1, step_size=10, gamma=0.1, power=2.0)
    assert learning_rate("fixed", 17, **kw) == 0.1
    assert learning_rate("step", 9.9, **kw) == pytest.approx(0.1)
    assert learning_rate("step", 20, **kw) == pytest.approx(0.001)
    assert learning_rate("multistep", 15, step_values=(5, 12, 25), **{k: v for k, v in kw.items() if k != "step_size"}) == pytest.approx(0.001)
    assert learning_rate("exp", 2, **kw) == pytest.approx(0.001)
    assert learning_rate("inv", 10, **kw) == pytest.approx(0.1 * 2 ** -2)
    assert learning_rate("poly", 15, **kw) == pytest.approx(0.1 * 0.25)
    assert learning_rate("sigmoid", 10, **kw) == pytest.approx(0.05)
    assert learning_rate("cosine", 15, **kw) == pytest.approx(0.05)
    assert learning_rate("cosine", 30, **kw) == pytest.approx(0.0, abs=1e-12)
    peak = learning_rate("onecycle", 9, **kw)
    assert peak == pytest.approx(0.1)
    assert learning_rate("onecycle", 0, **kw) == pytest.approx(0.1 / 25)
    assert learning_rate("onecycle", 30, **kw) == pytest.approx(0.1 / 1e4)


def test_schedule_covers_the_run_for_every_policy():
    for policy in POLICIES:
        points = schedule(policy, epochs=12, points_per_epoch=4, base_lr=0.01)
        assert points[0][0] == 0 and points[-1][0] == 12 and len(points) == 49
        assert all(math.isfinite(lr) and lr >= 0 for _, lr in points)
