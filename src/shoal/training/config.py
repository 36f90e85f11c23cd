"""``TrainConfig``: every training option, with the defaults each path was measured with."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from shoal.config import MAX_SEED, check_choice, check_freeze, check_int, check_number
from shoal.errors import ConfigError
from shoal.machine import DEVICES, check_device
from shoal.training.schedules import POLICIES
from shoal.training.solvers import SOLVERS

MEAN_MODES = ("auto", "image", "pixel", "network", "none")
PRECISIONS = ("auto", "float32", "bf16", "fp16")
MAX_EPOCHS = 100_000
MAX_LR = 10  # far above any rate that trains; larger ones only make NaN weights
MAX_GAMMA = 100  # the inv policy's rate and the sigmoid's steepness
MAX_POWER = 100
DROP_POLICIES = ("step", "multistep", "exp")  # gamma multiplies the rate at each drop: at most 1
HEADS = ("fit", "sgd")
# What only the training loop uses: a fitted head refuses them rather than ignore them.
LOOP_OPTIONS = ("epochs", "solver", "lr", "lr_policy", "step_size", "step_values", "gamma", "power", "weight_decay",
                "momentum", "label_smoothing", "snapshot_every", "val_every", "early_stop", "precision", "log_every", "sync_bn")

# Measured on the dolphins/seahorses set, 2-core CPU, judged on 24 photos held out of both
# training and validation (--test 20). Full fine-tuning runs at ~8 images/s, so three epochs
# already take half a minute; a linear head on the frozen, cached EfficientNet-Lite0 features
# reaches 100 % validation accuracy within 5 s. For that head, SGD at 0.05 classified every
# held-out photo right with at least 99.98 % confidence (0.01: 82.8 %, Adam 0.001: 71 % accuracy);
# on the digits sample 0.01, 0.05 and 0.1 end within a point of each other.
# The default fine-tune fits its head (no rate, no epochs); these serve --head sgd.
SCRATCH_DEFAULTS = {"lr": 0.01, "epochs": 30, "freeze": "none"}
FINETUNE_DEFAULTS = {"lr": 0.05, "epochs": 30, "freeze": "backbone"}
# End to end from pretrained weights (--freeze none or N), starting from the fitted head, the
# backbone at a tenth of the head's rate (bench/finetune.py, reference photos, seeds 0-2, judged on
# a test split held out of both others): 0.01 for 5 epochs kept 100 % test accuracy with a lower
# test log-loss than 0.003; label smoothing 0.1 changed nothing measurable, so it stays off.
END_TO_END_DEFAULTS = {"lr": 0.01, "epochs": 5}


@dataclass(frozen=True)
class TrainConfig:
    """What to train, and how. ``None`` fields take the default of the path (scratch/fine-tune)."""

    RUN_DEFAULTS: ClassVar[dict[str, str]] = {  # what an unset option becomes, from scratch and fine-tuning
        "freeze": "none, fine-tuning: backbone",
        "epochs": "30 (--head sgd: 30, end-to-end fine-tuning: 5)",
        "lr": "0.01 (--head sgd: 0.05, end-to-end fine-tuning: 0.01 for the head, a tenth for the backbone)",
    }

    dataset: str                        # name of a stored dataset
    network: str = "auto"               # registry name, timm name, or a .py file; auto: lenet, or efficientnet_lite0 when pretrained
    name: str | None = None             # model name in the store; default: <dataset>-<network>
    pretrained: bool | str = False      # False: from scratch; True: the network's default weights; or a weights file
    freeze: str | int | None = None     # none | backbone | the first N stages (an int)
    head: str | None = None             # fit | sgd: how the head of a frozen backbone learns; fit = logistic regression, its strength cross-validated (default when fine-tuning); sgd = the training loop
    epochs: int | None = None           # passes over the training split
    batch_size: int = 32                # images per step
    solver: str = "sgd"                 # sgd | nesterov | adam | adamw | adagrad | rmsprop | adadelta
    lr: float | None = None             # base learning rate
    lr_policy: str = "cosine"           # fixed | step | multistep | exp | inv | poly | sigmoid | cosine | onecycle
    step_size: float | None = None      # epochs between drops (step), or the midpoint (sigmoid); default a third of the run
    step_values: tuple[float, ...] = () # epochs at which multistep drops, e.g. 10,20
    gamma: float = 0.1                  # drop factor (step, multistep, exp, inv, sigmoid)
    power: float = 1.0                  # exponent (inv, poly)
    weight_decay: float = 1e-4          # L2 penalty
    momentum: float = 0.9               # for sgd, nesterov and rmsprop
    crop: int | None = None             # train on random crops of this size, validate on the centre; default: the network's input size when the images are at most 4/3 of it, 0 = no crop
    flip: bool = False                  # random horizontal mirroring
    color_jitter: float = 0.0           # brightness/contrast/saturation jitter strength, 0 = off
    label_smoothing: float = 0.0        # share of each target spread over the other classes (a guard against over-confidence), 0 = off
    mean: str = "auto"                  # subtract the dataset's mean image, its per-pixel mean, the network's, or none; auto: network's when pretrained, else image
    seed: int = 0                       # every random draw of the run derives from it
    snapshot_every: int = 5             # keep the weights every N epochs (the resume point is saved every epoch)
    val_every: int = 1                  # validate every N epochs
    early_stop: int | None = None       # stop after this many validations without improvement
    device: str = "auto"                # auto | cpu | cuda | cuda:N (that GPU) | mps
    threads: int | None = None          # CPU threads (torch, or ONNX Runtime for a fitted head); default all cores
    precision: str = "auto"             # float32, bf16 or fp16 autocast (fp16 on CUDA, with a GradScaler); auto: bf16 where the chip has it, fp16 on older GPUs
    log_every: int = 0                  # iterations between live progress events; 0 = about ten per epoch
    sync_bn: bool = False               # with several processes (--nproc), batch-norm statistics of the global batch, not each process's share (CUDA)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError(f"dataset must be the name of a stored dataset, got {self.dataset!r}", options=("dataset",))
        if self.freeze is not None:
            set_(self, "freeze", check_freeze(self.freeze))
        if self.head is not None:
            check_choice("head", self.head, HEADS)
        check_int("epochs", self.epochs, minimum=1, maximum=MAX_EPOCHS, optional=True)
        check_int("batch_size", self.batch_size, minimum=1, maximum=65_536)
        check_choice("solver", self.solver, SOLVERS)
        set_(self, "lr", check_number("lr", self.lr, minimum=0, exclusive_minimum=True, maximum=MAX_LR, optional=True))
        check_choice("lr_policy", self.lr_policy, POLICIES)
        set_(self, "step_size", check_number("step_size", self.step_size, minimum=0, exclusive_minimum=True,
                                             maximum=MAX_EPOCHS, optional=True))
        set_(self, "step_values", check_step_values(self.step_values))
        set_(self, "gamma", check_number("gamma", self.gamma, minimum=0, maximum=MAX_GAMMA))
        if self.lr_policy in DROP_POLICIES and self.gamma > 1:
            raise ConfigError(f"gamma must be at most 1 with lr_policy {self.lr_policy} (it multiplies the "
                              f"learning rate at each drop), got {self.gamma:g}", options=("gamma", "lr_policy"))
        set_(self, "power", check_number("power", self.power, minimum=0, maximum=MAX_POWER))
        set_(self, "weight_decay", check_number("weight_decay", self.weight_decay, minimum=0, maximum=1))
        set_(self, "momentum", check_number("momentum", self.momentum, minimum=0, maximum=1))
        check_int("crop", self.crop, minimum=0, maximum=4096, optional=True)
        set_(self, "color_jitter", check_number("color_jitter", self.color_jitter, minimum=0, maximum=1))
        set_(self, "label_smoothing", check_number("label_smoothing", self.label_smoothing, minimum=0, maximum=0.5))
        check_choice("mean", self.mean, MEAN_MODES)
        check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        check_int("snapshot_every", self.snapshot_every, minimum=0, maximum=MAX_EPOCHS)
        check_int("val_every", self.val_every, minimum=1, maximum=MAX_EPOCHS)
        check_int("early_stop", self.early_stop, minimum=1, maximum=MAX_EPOCHS, optional=True)
        check_device(self.device)
        check_int("threads", self.threads, minimum=1, maximum=4096, optional=True)
        check_choice("precision", self.precision, PRECISIONS)
        check_int("log_every", self.log_every, minimum=0)
        if not isinstance(self.sync_bn, bool):
            raise ConfigError(f"sync_bn must be true or false, got {self.sync_bn!r}", options=("sync_bn",))

    @property
    def finetune(self) -> bool:
        return self.pretrained not in (False, None, "")

    def resolved(self) -> TrainConfig:
        """Return a copy with every path-dependent default filled in (what the run records).

        Raises:
            ConfigError: a fitted head (``head='fit'``, the default when fine-tuning a frozen
                backbone) was given options of the training loop, or cannot be fitted as asked.
        """
        defaults = FINETUNE_DEFAULTS if self.finetune else SCRATCH_DEFAULTS
        network = self.network
        if network == "auto":
            network = "efficientnet_lite0" if self.finetune else "lenet"
        freeze = self.freeze if self.freeze is not None else defaults["freeze"]
        name = self.name or f"{self.dataset}-{_name_part(network)}".replace(":", "-").replace("/", "-")
        head = self.head or ("fit" if self.finetune and freeze == "backbone" and self.color_jitter == 0 else "sgd")
        if head == "fit":
            self._check_fit(freeze)
            return dataclasses.replace(self, network=network, name=name, freeze=freeze, head=head)
        if self.finetune and freeze != "backbone":
            defaults = {**defaults, **END_TO_END_DEFAULTS}
        epochs = self.epochs if self.epochs is not None else defaults["epochs"]
        return dataclasses.replace(
            self,
            network=network,
            name=name,
            freeze=freeze,
            head=head,
            epochs=epochs,
            lr=self.lr if self.lr is not None else defaults["lr"],
            step_size=self.step_size if self.step_size is not None else max(epochs / 3, 1e-9),
        )

    def _loop_options(self) -> list[str]:
        """The training-loop options set to something other than their default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return [name for name in LOOP_OPTIONS if getattr(self, name) != defaults[name]]

    def _check_fit(self, freeze: str | int) -> None:
        if not self.finetune:
            raise ConfigError("head 'fit' fits a head on pretrained features; add --pretrained (or --weights FILE), "
                              "or train from scratch with head sgd", options=("head",))
        if freeze != "backbone":
            raise ConfigError(f"head 'fit' needs a frozen backbone (freeze backbone), got freeze {freeze!r}; "
                              "use head sgd to train more than the head", options=("head", "freeze"))
        if self.color_jitter:
            raise ConfigError("color_jitter changes every view, so the features cannot be computed once for a "
                              "fitted head; use head sgd with it", options=("color_jitter", "head"))
        given = self._loop_options()
        if given:
            raise ConfigError(f"{', '.join(given)} belong{'s' if len(given) == 1 else ''} to the training loop, which "
                              "a fitted head does not run (its strength is chosen by cross-validation); use head "
                              "sgd to train the head with the loop", options=(*given, "head"))


def _name_part(network: str) -> str:
    """How a default model name calls its network: an imported ``layers:`` network by its own name."""
    if not network.startswith("layers:"):
        return network
    try:
        own = json.loads(network.removeprefix("layers:")).get("name")
    except (ValueError, AttributeError):
        own = None
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(own or "imported")).strip("-.")[:40] or "imported"


def check_step_values(value: Any) -> tuple[float, ...]:
    """Return the multistep epochs as a tuple of floats, from a list of numbers or text like ``"10,20"``.

    Raises:
        ConfigError: naming the value and the accepted forms.
    """
    items: Iterable[Any] = [value]
    if isinstance(value, str):
        items = value.split(",") if value.strip() else []
    elif isinstance(value, (list, tuple)):
        items = value
    out = []
    for item in items:
        number: Any = item
        if isinstance(item, str):
            try:
                number = float(item)
            except ValueError:
                number = item
        if not (isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number)
                and 0 <= number <= MAX_EPOCHS):
            raise ConfigError(
                f"step_values must be epochs from 0 to {MAX_EPOCHS} at which multistep drops, comma-separated "
                f"(for example '10,20'), got {value!r}", options=("step_values",))
        out.append(float(number))
    return tuple(out)
