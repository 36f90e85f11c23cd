"""Reading weight files and fitting state dicts to a network.

Every pretrained source ends in :func:`load_into`, which applies one policy:

* the first convolution is adapted when the input channel count differs (timm's
  ``adapt_input_conv``: grayscale sums the RGB filters);
* head weights (the modules :meth:`Network.heads` names) whose shape does not fit the
  new class count are dropped with a log line, and missing head weights keep their
  random initialisation;
* anything else that is missing, unexpected or of the wrong shape raises a
  :class:`~shoal.errors.NetworkError` naming the keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from shoal.errors import BundleError, NetworkError
from shoal.networks.hub import hub_cache_path

if TYPE_CHECKING:
    from torch import nn

    from shoal.networks.registry import Network

__all__ = [
    "WEIGHT_SUFFIXES",
    "download_state_dict",
    "hub_cache_path",
    "load_into",
    "load_resume_point",
    "load_weights",
    "normalize_state_dict",
    "read_weights",
    "save_weights",
]

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
"""File types a user's weights may have."""

NESTED_KEYS = ("state_dict", "model", "model_state_dict")
"""Keys under which training checkpoints keep the model's state dict."""

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes left by DataParallel/DDP and torch.compile wrappers."""

SHOAL_PREFIX = "net."
SHOAL_BUFFERS = frozenset({"mean", "scale"})
"""How shoal's own weight files (``NormalizedNet``) are laid out: the network under ``net.``."""

_SHOW = 5  # keys named in an error before "and N more"


def check_weights_path(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it names an existing weights file of a type shoal reads.

    Raises:
        NetworkError: The file is missing or of another type.
    """
    path = Path(path)
    if not path.is_file():
        raise NetworkError(
            f"pretrained weights file '{path}' does not exist; give the path of a .safetensors or "
            f".pth file, or --pretrained (pretrained=True) for the network's own weights."
        )
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise NetworkError(
            f"pretrained weights file '{path}' has type '{path.suffix}'; shoal reads "
            f"{', '.join(WEIGHT_SUFFIXES)} files."
        )
    return path


def save_weights(path: Path, model: nn.Module, *, epoch: int) -> None:
    """Write a model's weights (normalisation buffers included) as safetensors, atomically.

    Args:
        path: the ``.safetensors`` file to write (its folder is created).
        model: the network, usually a :class:`~shoal.networks.normalized.NormalizedNet`.
        epoch: the epoch the weights are from, kept in the file's metadata.
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"epoch": str(epoch)})
    os.replace(tmp, path)


def load_weights(path: Path, model: nn.Module) -> int:
    """Load weights written by :func:`save_weights` into ``model`` (strictly).

    Args:
        path: the ``.safetensors`` file.
        model: a network of the same shape.

    Returns:
        The epoch the weights were saved at (0 when the file does not say).
    """
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return weights_epoch(path)


def weights_epoch(path: Path) -> int:
    """The epoch a file written by :func:`save_weights` holds (0 when the file does not say)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {}).get("epoch", 0))


def load_resume_point(path: Path, model: nn.Module) -> int:
    """Load the model weights of a training run's resume point (``state.pt``) into ``model``.

    The file holds ``{"model": state dict, "state": {"epoch": n, ...}, ...}`` (the optimizer and
    RNG states beside them are training's); it is read with ``weights_only=True``.

    Args:
        path: the resume point.
        model: a network of the same shape.

    Returns:
        The last finished epoch.

    Raises:
        BundleError: the file is damaged or not a resume point of this network.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        return int(saved["state"]["epoch"])
    except Exception as exc:  # cut short, garbage, or not a resume point
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"the resume point {path} is damaged ({why}); export an epoch that was kept "
                          "(--epoch N), or delete the model and train it again") from None


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a user's weights file into a flat state dict, never unpickling objects.

    ``.safetensors`` files are read with safetensors; ``.pth``/``.pt`` files with
    ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
    containers. The result goes through :func:`normalize_state_dict`.

    Args:
        path: A ``.safetensors``, ``.pth`` or ``.pt`` file.

    Returns:
        Parameter name → tensor, on the CPU.

    Raises:
        NetworkError: The file is missing, of another type, damaged, holds Python
            objects, or holds no state dict.
    """
    path = check_weights_path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        import safetensors.torch
        from safetensors import SafetensorError

        try:
            loaded: Any = safetensors.torch.load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise NetworkError(
                f"'{path}' is not a readable safetensors file ({exc}); save the weights "
                f"again with safetensors.torch.save_file(model.state_dict(), path)."
            ) from exc
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise NetworkError(
                f"'{path}' holds Python objects besides tensors, and shoal does not unpickle "
                f"them (torch.load weights_only=True refused it). Save only the weights: "
                f"torch.save(model.state_dict(), path), or use a .safetensors file."
            ) from exc
        except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise NetworkError(
                f"'{path}' is not a readable PyTorch weights file ({exc}); save the weights "
                f"again with torch.save(model.state_dict(), path)."
            ) from exc
    return normalize_state_dict(loaded, source=f"'{path}'")


def normalize_state_dict(obj: Any, *, source: str) -> dict[str, torch.Tensor]:
    """Unwrap a checkpoint into a flat state dict.

    A dict holding a dict under one of :data:`NESTED_KEYS` is unwrapped (repeatedly),
    and the prefixes in :data:`WRAPPER_PREFIXES` are stripped from every key.

    Args:
        obj: What was read from the file.
        source: How to name the file in errors.

    Returns:
        Parameter name → tensor.

    Raises:
        NetworkError: ``obj`` is not a mapping of names to tensors.
    """
    while isinstance(obj, Mapping) and not _all_tensors(obj):
        nested = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping) or not obj:
        raise NetworkError(
            f"{source} holds {type(obj).__name__}, not a state dict; save the weights with "
            f"torch.save(model.state_dict(), path)."
        )
    if not _all_tensors(obj):
        others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        raise NetworkError(
            f"{source} is not a state dict: {_name_some(others)} "
            f"{'is' if len(others) == 1 else 'are'} not tensors (checkpoints may nest the "
            f"weights under {', '.join(repr(k) for k in NESTED_KEYS)}); save the weights with "
            f"torch.save(model.state_dict(), path)."
        )
    if SHOAL_BUFFERS <= set(obj) and all(k in SHOAL_BUFFERS or k.startswith(SHOAL_PREFIX) for k in obj):
        # A shoal model's own weights (best epoch, snapshot or bundle): the network sits under 'net.',
        # beside its input normalisation, so a trained model can be the start of another.
        obj = {k[len(SHOAL_PREFIX) :]: v for k, v in obj.items() if k.startswith(SHOAL_PREFIX)}
    state_dict = {}
    for key, value in obj.items():
        for prefix in WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        state_dict[key] = value
    return state_dict


def _all_tensors(obj: Mapping[Any, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _name_some(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown if len(keys) <= _SHOW else f"{shown} and {len(keys) - _SHOW} more"


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    network: Network,
    source: str,
) -> None:
    """Load ``state_dict`` into ``model`` under the policy in the module docstring.

    Args:
        model: A model built by ``network``.
        state_dict: Flat name → tensor weights.
        network: The adapter that built ``model`` (names its first conv and heads).
        source: How to name where the weights came from, in logs and errors.

    Raises:
        NetworkError: Non-head weights are missing, unexpected or of the wrong shape.
    """
    from timm.models import adapt_input_conv

    expected = model.state_dict()
    weights = dict(state_dict)

    conv_key = f"{network.first_conv_name(model)}.weight"
    if conv_key in weights and conv_key in expected:
        have, want = weights[conv_key], expected[conv_key]
        if have.ndim == 4 and want.ndim == 4 and have.shape[1] != want.shape[1]:
            with contextlib.suppress(NotImplementedError, ValueError):
                weights[conv_key] = adapt_input_conv(want.shape[1], have)
                logger.info(
                    "%s: adapted %s from %d to %d input channels",
                    source,
                    conv_key,
                    have.shape[1],
                    want.shape[1],
                )

    head_prefixes = tuple(f"{name}." for name in network.heads(model))

    def is_head(key: str) -> bool:
        return key.startswith(head_prefixes)

    dropped, unexpected, mismatched = [], [], []
    for key, value in weights.items():
        if key not in expected:
            (dropped if is_head(key) else unexpected).append(key)
        elif value.shape != expected[key].shape:
            (dropped if is_head(key) else mismatched).append(key)
    missing = [
        key
        for key in expected
        if key not in weights and not is_head(key) and not key.endswith("num_batches_tracked")
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing {_count(missing, 'key')}: {_name_some(missing)}")
        if unexpected:
            problems.append(f"unexpected {_count(unexpected, 'key')}: {_name_some(unexpected)}")
        for key in mismatched[:_SHOW]:
            problems.append(
                f"{key} is {list(weights[key].shape)} in the file but "
                f"{list(expected[key].shape)} in the network"
            )
        if len(mismatched) > _SHOW:
            problems.append(f"{len(mismatched) - _SHOW} more shape mismatches")
        raise NetworkError(
            f"weights from {source} do not fit {network.spec.name}: {'; '.join(problems)}. "
            f"Check that they were saved from {network.spec.name} (shoal networks lists the "
            f"names), or use pretrained=None to train from scratch."
        )

    if dropped:
        logger.info(
            "%s: dropped %s, which do not fit the new head (expected when fine-tuning)",
            source,
            ", ".join(f"{key} {list(weights[key].shape)}" for key in dropped),
        )
    fresh = [key for key in expected if is_head(key) and key not in weights]
    if fresh:
        logger.info("%s: head weights not in the file, initialised randomly: %s", source, fresh)
    model.load_state_dict({k: v for k, v in weights.items() if k not in dropped}, strict=False)


def _count(keys: list[str], noun: str) -> str:
    return f"{len(keys)} {noun}{'' if len(keys) == 1 else 's'}"


def fetch_to_cache(url: str, *, network: str) -> Path:
    """Make sure the weights file of ``url`` is in the torch hub cache, downloading it once.

    A file already at :func:`hub_cache_path` is used as is; otherwise it is downloaded
    there (``file://`` URLs work too) and its name's hash prefix is checked.

    Args:
        url: Where the weights are published.
        network: The network's name, for errors.

    Returns:
        The cached file.

    Raises:
        NetworkError: The download fails (offline, for instance) or the hash does not
            match; the message says how to supply the file.
    """
    import torch.hub

    cached = hub_cache_path(url)
    if cached.is_file():
        return cached
    match = torch.hub.HASH_REGEX.search(cached.name)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # torch.hub announces downloads on stdout; keep stdout for results (--json).
        with contextlib.redirect_stdout(sys.stderr):
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=match.group(1) if match else None,
                                           progress=False)
    except (OSError, RuntimeError) as exc:
        raise NetworkError(
            f"could not get the pretrained {network} weights from {url} "
            f"({type(exc).__name__}: {exc}). Offline? Download the file on a machine that is "
            f"online and either pass it with --weights path/to/{cached.name} "
            f"(pretrained='path/to/{cached.name}' in Python) or put it in the torch hub cache "
            f"at {cached} (TORCH_HOME moves the cache)."
        ) from exc
    return cached


def download_state_dict(url: str, *, network: str) -> dict[str, torch.Tensor]:
    """Read a state dict through the torch hub cache (:func:`fetch_to_cache` downloads it once).

    Args:
        url: Where the weights are published.
        network: The network's name, for errors.

    Returns:
        The state dict.

    Raises:
        NetworkError: The download fails, or the file is not a weights file.
    """
    cached = fetch_to_cache(url, network=network)
    try:
        loaded = torch.load(cached, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        raise NetworkError(
            f"the cached {network} weights at {cached} cannot be read ({type(exc).__name__}: {exc}); "
            f"delete the file so that it is downloaded again, or pass a weights file with --weights."
        ) from exc
    return normalize_state_dict(loaded, source=str(cached))
