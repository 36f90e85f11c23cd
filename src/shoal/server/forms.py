"""Forms and request schemas generated from the library's config dataclasses.

Every option of :class:`~shoal.data.config.DataConfig` and
:class:`~shoal.training.TrainConfig` is a dataclass field with a default and a one-line
comment. This module reads them once, so the new-dataset and new-model pages show every
option with its default and its explanation, and the JSON API documents the same options
— adding a field to a config adds it to the page and to ``/docs`` with no change here.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from shoal.config import field_docs, shown_default
from shoal.data.config import DataConfig
from shoal.data.imageops import RESIZE_MODES
from shoal.training.config import DEVICES, HEADS, LOOP_OPTIONS, MEAN_MODES, TrainConfig
from shoal.training.schedules import POLICIES
from shoal.training.solvers import SOLVERS

# Choices the pages offer as drop-downs (the configs check them again).
CHOICES: dict[str, tuple[Any, ...]] = {
    "resize_mode": RESIZE_MODES,
    "channels": (3, 1),
    "solver": tuple(SOLVERS),
    "lr_policy": tuple(POLICIES),
    "mean": MEAN_MODES,
    "device": DEVICES,
    "head": HEADS,
}

# How a drop-down names a choice, where the bare value says too little.
CHOICE_LABELS: dict[str, dict[Any, str]] = {
    "channels": {3: "3 (RGB colour)", 1: "1 (grayscale)"},
    "head": {"fit": "fit (logistic regression, cross-validated)", "sgd": "sgd (the training loop)"},
}

# Training options shown in each section of the new-model page, in order.
TRAIN_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Solver", ("epochs", "batch_size", "solver", "lr", "momentum", "weight_decay")),
    ("Learning-rate schedule", ("lr_policy", "step_size", "step_values", "gamma", "power")),
    ("Fine-tuning", ("freeze", "head")),
    ("Data augmentation and input", ("crop", "flip", "color_jitter", "mean")),
    ("Run", ("seed", "snapshot_every", "val_every", "early_stop", "device", "threads", "log_every")),
)
# Set on the page by the dataset / network / weights pickers, not as plain fields.
TRAIN_SOURCE_FIELDS = ("dataset", "network", "name", "pretrained")
# The options that accept several comma-separated values: one model per combination.
SWEEP_FIELDS = ("lr", "batch_size")
# Dataset options a page sets through its own source picker.
DATA_SOURCE_FIELDS = ("val_folder", "list_file")


@dataclass(frozen=True)
class FormField:
    """One option as a page shows it."""

    name: str
    label: str
    help: str  # the config's one-line comment
    default: Any  # the config's default (None: chosen by the run, see help)
    kind: str  # "number", "text", "select", "checkbox"
    choices: tuple[Any, ...] = ()
    sweep: bool = False  # accepts "0.01, 0.001"
    shown: str = "auto"  # the default as the page shows it (a drop-down whose default is None offers it first)
    loop: bool = False  # an option of the training loop: off while the head is fitted

    def choice_label(self, choice: Any) -> str:
        return CHOICE_LABELS.get(self.name, {}).get(choice, str(choice))

    @property
    def placeholder(self) -> str:
        return f"{self.shown}  (or several: a, b, c)" if self.sweep else self.shown


def _label(name: str) -> str:
    special = {"lr": "Learning rate", "lr_policy": "Policy", "val_pct": "Validation %", "test_pct": "Test %",
               "val_every": "Validate every", "color_jitter": "Colour jitter", "mean": "Mean subtraction",
               "early_stop": "Early stop after", "log_every": "Log every", "snapshot_every": "Snapshot every",
               "min_per_class": "Min images per class", "max_per_class": "Max images per class",
               "resize_mode": "Resize mode", "batch_size": "Batch size", "step_size": "Step size",
               "step_values": "Step values", "weight_decay": "Weight decay"}
    return special.get(name, name.replace("_", " ").capitalize())


def _kind(name: str, hint: Any, default: Any) -> str:
    if name == "size":
        return "text"
    if name in CHOICES:
        return "select"
    if hint is bool or default is True or default is False:
        return "checkbox"
    args = set(typing.get_args(hint)) - {type(None)} or {hint}
    if args <= {int, float}:
        return "number"
    return "text"


def _fields(cls: type, names: tuple[str, ...] | None = None, loop: tuple[str, ...] = ()) -> list[FormField]:
    hints = typing.get_type_hints(cls)
    comments = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(FormField(f.name, _label(f.name), comments.get(f.name, ""), default,
                             _kind(f.name, hints[f.name], default), CHOICES.get(f.name, ()), f.name in SWEEP_FIELDS,
                             shown_default(cls, f.name) or "auto", f.name in loop))
    if names is not None:
        out.sort(key=lambda field: names.index(field.name))
    return out


def train_sections() -> list[tuple[str, list[FormField]]]:
    """The new-model page's option sections: every TrainConfig option but the source pickers.

    The training loop's options are marked ``loop``: a fitted head refuses them, so the page turns them off.
    """
    sections = [(title, _fields(TrainConfig, names, LOOP_OPTIONS)) for title, names in TRAIN_SECTIONS]
    shown = {f.name for _, fields in sections for f in fields} | set(TRAIN_SOURCE_FIELDS)
    rest = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in shown)
    if rest:  # an option added to TrainConfig later still appears
        sections.append(("More", _fields(TrainConfig, rest, LOOP_OPTIONS)))
    return sections


def data_fields() -> list[FormField]:
    """The new-dataset page's options: every DataConfig option but the source pickers."""
    return [f for f in _fields(DataConfig) if f.name not in DATA_SOURCE_FIELDS]


# -- request schemas generated from the same fields -----------------------------------------------
def _api_type(name: str, hint: Any) -> Any:
    if name == "size":
        return int | str | list[int]
    if name == "step_values":
        return list[float]
    if name == "freeze":
        return str | int
    args = tuple(a for a in typing.get_args(hint) if a is not type(None))
    base: Any = hint if not args else (args[0] if len(args) == 1 else typing.Union[args])  # noqa: UP007
    if name in SWEEP_FIELDS:
        return base | list[base]  # type: ignore[operator]
    return base


def _options_model(model_name: str, cls: type, skip: tuple[str, ...], doc: str) -> type[BaseModel]:
    hints = typing.get_type_hints(cls)
    comments = field_docs(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        description = comments.get(f.name, "") + f" (default: {shown_default(cls, f.name) or 'auto'})"
        if f.name in SWEEP_FIELDS:
            description += "; a list trains one model per value (a sweep)"
        fields[f.name] = (Optional[_api_type(f.name, hints[f.name])], Field(None, description=description))
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields)


@lru_cache
def train_options_model() -> type[BaseModel]:
    return _options_model("TrainOptions", TrainConfig, TRAIN_SOURCE_FIELDS,
                          "Training options (TrainConfig); omitted or null options take their defaults.")


@lru_cache
def data_options_model() -> type[BaseModel]:
    return _options_model("DataOptions", DataConfig, (), "Dataset options (DataConfig); omitted or null options "
                          "take their defaults. val_folder and list_file are server-side paths inside the allowed roots.")
