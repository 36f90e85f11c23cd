"""The training loop: epochs of SGD (or another solver) over the network, read top to bottom.

setup → data → model → optimizer → resume → loop (train, validate, snapshot) → bundle.
:func:`shoal.training.run.train` registers the run and calls :func:`loop_run` (or the fitted
head of :mod:`shoal.training.fitted`); progress goes out as events, never as prints.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from shoal import datasets, networks
from shoal.bundle.card import ModelCard
from shoal.errors import TrainingError
from shoal.machine import torch_device
from shoal.models import ModelFolder
from shoal.networks.normalized import NormalizedNet
from shoal.networks.weights import check_weights_path, save_weights
from shoal.store import Store
from shoal.training import snapshots
from shoal.training.batches import FeatureBatches, PixelBatches
from shoal.training.card import model_card
from shoal.training.config import TrainConfig
from shoal.training.run import Aborted, Emitter, TrainResult
from shoal.training.schedules import backbone_scale, learning_rate
from shoal.training.solvers import make_optimizer


def check(config: TrainConfig) -> None:
    """Refuse, before a model is registered, a network, weights file or device that cannot work."""
    networks.get_spec(config.network)
    if isinstance(config.pretrained, str):
        check_weights_path(config.pretrained)
    elif config.pretrained is True:
        networks.resolve_network(config.network).fetch_pretrained()
    torch_device(config.device)


def loop_run(config: TrainConfig, folder: ModelFolder, store: Store, emit: Emitter, *, resume: bool) -> TrainResult:
    """Train ``config``'s network epoch by epoch into ``folder``, then write its bundle."""
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, restore it after
        return _loop(config, folder, store, emit, resume=resume)


def _loop(config: TrainConfig, folder: ModelFolder, store: Store, emit: Emitter, *, resume: bool) -> TrainResult:
    # -- setup ----------------------------------------------------------------------------------
    device = torch.device(torch_device(config.device))
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    dataset = datasets.load(config.dataset, store=store)
    classes = dataset.classes

    # -- model ----------------------------------------------------------------------------------
    emit({"type": "prepare", "message": f"building {config.network}"
          + (" with its pretrained weights" if config.pretrained else "")})
    model, card = build_model(config, dataset)
    folder.write_card(card)
    crop = card.input.crop_hw
    model.to(device=device, memory_format=torch.channels_last)
    head = networks.classifier_head(model.net)
    trainable = [p for p in model.parameters() if p.requires_grad]
    head_only = {id(p) for p in trainable} <= {id(p) for p in head.parameters()}
    cached = head_only and config.color_jitter == 0  # a frozen backbone sees fixed views: compute features once

    # -- data -----------------------------------------------------------------------------------
    clock = time.perf_counter()  # the feature cache counts as training time
    train_x, val_x = dataset.images("train"), dataset.images("val")
    train_y, val_y = dataset.labels("train"), dataset.labels("val")
    if len(train_y) == 0 or len(val_y) == 0:
        raise TrainingError(f"dataset {dataset.name!r} needs images in both train and val splits "
                            f"(has {len(train_y)} and {len(val_y)}); rebuild it with a larger --val")
    if cached:
        total = len(train_y) + len(val_y)
        emit({"type": "prepare", "message": f"computing the frozen backbone's features of {total} images, once"})
        features = _FeatureCache(model, crop, device, config.batch_size,
                                 on_batch=lambda done: emit({"type": "features", "done": done, "total": total}))
        train_batches: Any = FeatureBatches(*features.of(train_x, train_y, flip=config.flip), batch_size=config.batch_size,
                                            train=True, generator=generator)
        val_batches: Any = FeatureBatches(*features.of(val_x, val_y, flip=False), batch_size=config.batch_size, train=False)
        forward: Callable[[torch.Tensor], torch.Tensor] = head
        autocast: Any = contextlib.nullcontext()  # a linear head on cached features: nothing to gain
    else:
        autocast = _autocast(config.precision, device)
        train_batches = PixelBatches(train_x, train_y, batch_size=config.batch_size, crop=crop, train=True,
                                     flip=config.flip, color_jitter=config.color_jitter, generator=generator)
        val_batches = PixelBatches(val_x, val_y, batch_size=config.batch_size, crop=crop, train=False)
        forward = model
        if config.finetune and not resume and isinstance(head, torch.nn.Linear):
            emit({"type": "prepare", "message": "fitting the head on the pretrained features first"})
            _fit_head_first(model, head, train_x, train_y, crop, device, config, len(classes))

    # -- optimizer ------------------------------------------------------------------------------
    # End to end from pretrained weights, the backbone learns at a tenth of the head's rate.
    head_ids = {id(p) for p in head.parameters()}
    groups = [{"params": [p for p in trainable if id(p) not in head_ids],
               "lr_scale": backbone_scale(config) if not head_only else 1.0},
              {"params": [p for p in trainable if id(p) in head_ids], "lr_scale": 1.0}]
    optimizer = make_optimizer(config.solver, [g for g in groups if g["params"]], lr=config.lr,
                               momentum=config.momentum, weight_decay=config.weight_decay)
    lr_at = lambda epoch: learning_rate(config.lr_policy, epoch, epochs=config.epochs, base_lr=config.lr,  # noqa: E731
                                        step_size=config.step_size, step_values=config.step_values,
                                        gamma=config.gamma, power=config.power)
    state = {"epoch": 0, "best": None, "history": [], "elapsed": 0.0, "stale": 0}
    if resume:
        state = snapshots.load_state(folder, model, optimizer, generator)
    emit({"type": "start", "name": config.name, "classes": classes, "cached_features": cached, "resumed": resume,
          "bf16": not isinstance(autocast, contextlib.nullcontext),
          "epoch": state["epoch"], "epochs": config.epochs, "train_images": len(train_y), "val_images": len(val_y),
          "device": str(device)})

    # -- loop -----------------------------------------------------------------------------------
    iters = len(train_batches)
    log_every = config.log_every or max(1, iters // 10)
    started = clock - state["elapsed"]
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        _train_mode(model, keep_statistics=config.finetune)
        seen, loss_sum, tick = 0, 0.0, time.perf_counter()
        for i, (x, y) in enumerate(train_batches):
            if folder.abort_requested():
                raise Aborted
            lr = lr_at(epoch - 1 + i / iters)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            x, y = _to(x, device), y.to(device)
            with autocast:
                loss = _loss(forward(x), y, smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(f"the training loss became {loss_value} in epoch {epoch}: the learning rate "
                                    f"{lr:g} is too high for this network; try --lr {config.lr / 10:g}")
            seen, loss_sum = seen + len(y), loss_sum + loss_value * len(y)
            if (i + 1) % log_every == 0 or i + 1 == iters:
                emit({"type": "iteration", "epoch": round(epoch - 1 + (i + 1) / iters, 4), "train_loss": loss_sum / seen,
                      "lr": lr, "images_per_s": seen / (time.perf_counter() - tick),
                      "elapsed_s": time.perf_counter() - started})
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "lr": lr,
                  "images_per_s": seen / (time.perf_counter() - tick)}
        if epoch % config.val_every == 0 or epoch == config.epochs:
            record.update(evaluate(forward, val_batches, len(classes), device, model))
            best = _best(state)
            improved = best is None or _better(record, best)
            state["stale"] = 0 if improved else state["stale"] + 1
            if improved:
                state["best"] = epoch
                save_weights(folder.best_path, model, epoch=epoch)
        record["elapsed_s"] = time.perf_counter() - started
        state["history"].append(record)
        state["epoch"], state["elapsed"] = epoch, record["elapsed_s"]
        if config.snapshot_every and epoch % config.snapshot_every == 0:
            save_weights(folder.snapshot(epoch), model, epoch=epoch)
        snapshots.save_state(folder, model, optimizer, generator, state)
        best = _best(state)
        store.update("model", config.name, summary={"epoch": epoch, "best_epoch": state["best"],
                                                     "val_accuracy": best["val_accuracy"] if best else None})
        emit({"type": "epoch", **record})
        if config.early_stop and state["stale"] >= config.early_stop:
            emit({"type": "early_stop", "epoch": epoch, "best_epoch": state["best"]})
            break

    # -- bundle ---------------------------------------------------------------------------------
    from shoal import bundle

    history = [h for h in state["history"] if "val_accuracy" in h]
    emit({"type": "export", "message": f"writing the bundle of epoch {state['best']} (ONNX export, checked against torch)"})
    out = bundle.export(config.name, epoch="best", store=store, out=folder.bundle_path)
    emit({"type": "done", "bundle": str(out), "best_epoch": state["best"], "elapsed_s": time.perf_counter() - started})
    return TrainResult(config.name, "done", folder.path, out, history, state["best"])


# -- helpers ---------------------------------------------------------------------------------------

def build_model(config: TrainConfig, dataset: Any) -> tuple[NormalizedNet, ModelCard]:
    """Return the network with its normalisation built in, and its card (what the bundle records).

    Args:
        config: the resolved training configuration.
        dataset: the stored dataset it trains on.

    Returns:
        The network, and its :class:`~shoal.bundle.ModelCard`: architecture, labels, input
        size and crop, resize mode, channels and normalisation.

    Raises:
        TrainingError: the crop is larger than the dataset's images.
        NetworkError: the network cannot be built as asked.
    """
    spec = networks.get_spec(config.network)
    card, mean, scale = model_card(config, dataset, native_size=spec.input_size,
                                   normalization=spec.normalization(dataset.channels))
    net = networks.create(config.network, len(dataset.classes), pretrained=config.pretrained or None,
                          channels=dataset.channels, freeze=config.freeze)
    return NormalizedNet(net, torch.from_numpy(mean), torch.from_numpy(scale)), card


def _autocast(precision: str, device: torch.device) -> Any:
    """bf16 autocast for training steps where asked, or (auto) where the chip has native bf16.

    Measured with bench/cpu_options.py on a 2-core AMD EPYC with avx512_bf16: AlexNet training
    steps 2.1x faster than float32. Validation and the exported model stay float32.
    """
    if precision == "float32":
        return contextlib.nullcontext()
    if precision == "auto":
        native = (torch.cuda.is_bf16_supported() if device.type == "cuda"
                  else device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if not native:
            return contextlib.nullcontext()
    if device.type not in ("cpu", "cuda"):
        raise TrainingError(f"precision 'bf16' is not available on {device.type}; use --precision float32")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _loss(output: Any, target: torch.Tensor, *, smoothing: float = 0.0) -> torch.Tensor:
    # GoogLeNet in training mode also returns its two auxiliary heads, weighted 0.3 as in the paper.
    if isinstance(output, tuple):
        main, *aux = output
        return (F.cross_entropy(main, target, label_smoothing=smoothing)
                + 0.3 * sum(F.cross_entropy(a, target, label_smoothing=smoothing) for a in aux if a is not None))
    return F.cross_entropy(output, target, label_smoothing=smoothing)


def _fit_head_first(model: NormalizedNet, head: torch.nn.Linear, images: Any, labels: Any,
                    crop: tuple[int, int] | None, device: torch.device, config: TrainConfig, num_classes: int) -> None:
    """Start end-to-end fine-tuning from the fitted head on the pretrained features (linear probe,
    then fine-tune: Kumar et al., 2022), not from a random head whose gradients would first
    scramble the backbone."""
    from shoal.training.head import fit_head

    features, targets = _FeatureCache(model, crop, device, config.batch_size).of(images, labels, flip=False)
    fitted = fit_head(features.float().cpu().numpy(), targets.numpy(), num_classes=num_classes, seed=config.seed)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(fitted.weight))
        head.bias.copy_(torch.from_numpy(fitted.bias))


def _train_mode(model: NormalizedNet, *, keep_statistics: bool) -> None:
    """Training mode, except for layers whose parameters are all frozen (their batch-norm statistics stay).

    With ``keep_statistics`` (fine-tuning pretrained weights) every batch-norm layer keeps its
    pretrained statistics, as at inference: small batches of a small dataset would replace them
    with noisy ones, and the head fitted on the pretrained features would no longer fit (a first
    training loss of 4.2 instead of 0.1 on 3 classes). Their scale and shift still learn.
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        frozen = params and not any(p.requires_grad for p in params)
        if frozen or (keep_statistics and isinstance(module, torch.nn.modules.batchnorm._BatchNorm)):
            module.eval()


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], batches: Any, num_classes: int,
             device: torch.device, model: torch.nn.Module) -> dict[str, float]:
    """Return validation loss, top-1 accuracy (and top-5 with at least 5 classes)."""
    was_training = model.training
    model.eval()
    n, loss_sum, top1, top5 = 0, 0.0, 0, 0
    for x, y in batches:
        logits = forward(_to(x, device))
        y = y.to(device)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        ranked = logits.topk(min(5, num_classes), dim=1).indices
        top1 += (ranked[:, 0] == y).sum().item()
        top5 += (ranked == y[:, None]).any(1).sum().item()
        n += len(y)
    model.train(was_training)
    metrics = {"val_loss": loss_sum / n, "val_accuracy": top1 / n}
    if num_classes >= 5:
        metrics["val_top5"] = top5 / n
    return metrics


def _best(state: dict[str, Any]) -> dict[str, Any] | None:
    """The record of the best validated epoch so far."""
    return next((h for h in state["history"] if h["epoch"] == state["best"]), None)


def _better(record: dict[str, Any], best: dict[str, Any]) -> bool:
    if record["val_accuracy"] != best["val_accuracy"]:
        return record["val_accuracy"] > best["val_accuracy"]
    return record["val_loss"] < best["val_loss"]


class _FeatureCache:
    """Backbone features of fixed views (centre crop, and its mirror), computed once."""

    def __init__(self, model: NormalizedNet, crop: tuple[int, int] | None, device: torch.device, batch_size: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.model, self.crop, self.device, self.batch_size = model, crop, device, max(batch_size, 32)
        self.extract = networks.feature_extractor(model.net)
        self.on_batch, self.done = on_batch, 0  # told how many images are done, across calls of of()

    @torch.no_grad()
    def of(self, images: Any, labels: Any, *, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        views, targets = [], []
        for x, y in PixelBatches(images, labels, batch_size=self.batch_size, crop=self.crop, train=False):
            for mirrored in (False, True) if flip else (False,):
                pixels = _to(x.flip(3) if mirrored else x, self.device)
                views.append(self.extract(self.model.normalize(pixels)).flatten(1))
                targets.append(y)
            self.done += len(y)
            if self.on_batch is not None:
                self.on_batch(self.done)
        return torch.cat(views), torch.cat(targets)
