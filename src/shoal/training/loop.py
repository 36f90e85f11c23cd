"""The training loop: epochs of SGD (or another solver) over the network, read top to bottom.

setup → data → model → optimizer → resume → loop (train, validate, snapshot) → bundle.
:func:`shoal.training.run.train` registers the run and calls :func:`loop_run` (or the fitted
head of :mod:`shoal.training.fitted`); progress goes out as events, never as prints.

Data-parallel (:mod:`shoal.training.distributed`): every rank runs this same loop on its shard
of each epoch, the model in DDP; rank 0 calls :func:`loop_run` and alone writes (``main``
guards each write), the other ranks call :func:`follow` and receive rank 0's configuration.
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
from shoal.training import distributed, snapshots
from shoal.training.batches import FeatureBatches, PixelBatches
from shoal.training.card import model_card
from shoal.training.config import TrainConfig
from shoal.training.run import Aborted, Emitter, TrainResult
from shoal.training.schedules import backbone_scale, learning_rate
from shoal.training.solvers import make_optimizer


def check(config: TrainConfig) -> None:
    """Refuse, before a model is registered, a network, weights file or device that cannot work."""
    networks.get_spec(config.network)
    here = distributed.world()
    if isinstance(config.pretrained, str):
        check_weights_path(config.pretrained)
    elif config.pretrained is True:
        networks.resolve_network(config.network).fetch_pretrained()
    device = _rank_device(torch_device(config.device), here)
    if config.sync_bn and device.type != "cuda":
        raise TrainingError(f"sync_bn needs CUDA GPUs (torch's SyncBatchNorm does not run on {device.type}); "
                            "drop --sync-bn, or train on --device cuda")


def loop_run(config: TrainConfig, folder: ModelFolder, store: Store, emit: Emitter, *, resume: bool,
             dataset: Any = None) -> TrainResult:
    """Train ``config``'s network epoch by epoch into ``folder``, then write its bundle.

    ``dataset`` is the stored dataset when the caller has it open already (else it is loaded).
    In a data-parallel run this is rank 0's part; the other ranks call :func:`follow`.
    """
    return _in_group(lambda group: _loop(config, folder, store, emit, resume=resume, ranks=group, dataset=dataset))


def follow(store: Store) -> TrainResult:
    """The part of a rank other than 0 in a data-parallel run: rank 0's configuration (and resume
    point), the same loop on this rank's shards, and nothing written anywhere."""
    def run(group: distributed.Group) -> TrainResult:
        config = group.share(None)
        folder = ModelFolder(store.folder("model", config.name))  # never written, nor read: rank 0 sends
        try:
            return _loop(config, folder, store, lambda event: None, resume=False, ranks=group)
        except Aborted:  # rank 0 records it; this rank ends as cleanly
            return TrainResult(config.name, "aborted", folder.path, None)

    return _in_group(run)


def _in_group(run: Callable[[distributed.Group], TrainResult]) -> TrainResult:
    def seeded(group: distributed.Group) -> TrainResult:
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, restore it after
            return run(group)

    return distributed.in_group(seeded)


def _loop(config: TrainConfig, folder: ModelFolder, store: Store, emit: Emitter, *, resume: bool,
          ranks: distributed.Group, dataset: Any = None) -> TrainResult:
    # -- setup ----------------------------------------------------------------------------------
    here, main = ranks.world, ranks.world.main
    if main:
        ranks.share(config)  # the others wait for it: they start once the run is registered
    saved = snapshots.read_state(folder) if main and resume else None
    if saved is not None:
        snapshots.settle(folder, saved["state"])
    saved = ranks.share(saved)
    resume = saved is not None
    device = _rank_device(torch_device(config.device), here)
    ranks.use(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the input size is fixed: let cuDNN pick its fastest kernels once
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if dataset is None:
        dataset = datasets.load(config.dataset, store=store)
    classes = dataset.classes

    # -- model ----------------------------------------------------------------------------------
    emit({"type": "prepare", "message": f"building {config.network}"
          + (" with its pretrained weights" if config.pretrained else "")})
    model, card = build_model(config, dataset)
    if main:
        folder.write_card(card)
    if here.rank:
        torch.manual_seed(config.seed + here.rank)  # DDP copies rank 0's weights; dropout differs by rank
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
    batch, shard = config.batch_size // here.size, (here.rank, here.size)  # --batch-size is the global batch
    if cached:
        total = len(train_y) + len(val_y)
        emit({"type": "prepare", "message": f"computing the frozen backbone's features of {total} images, once"})
        features = _FeatureCache(model, crop, device, config.batch_size, group=ranks,
                                 on_batch=lambda done: emit({"type": "features", "done": done, "total": total}))
        train_batches: Any = FeatureBatches(*features.of(train_x, train_y, flip=config.flip), batch_size=batch,
                                            train=True, seed=config.seed, shard=shard)
        val_batches: Any = FeatureBatches(*features.of(val_x, val_y, flip=False), batch_size=batch, train=False,
                                          shard=shard)
        forward: Callable[[torch.Tensor], torch.Tensor] = head
        amp = None  # a linear head on cached features: nothing to gain
    else:
        amp = amp_dtype(config.precision, device)
        train_batches = PixelBatches(train_x, train_y, batch_size=batch, crop=crop, train=True, flip=config.flip,
                                     color_jitter=config.color_jitter, generator=generator, seed=config.seed, shard=shard,
                                     prefetch=device.type == "cuda")
        val_batches = PixelBatches(val_x, val_y, batch_size=batch, crop=crop, train=False, shard=shard)
        forward = model
        if config.finetune and not resume and isinstance(head, torch.nn.Linear):
            emit({"type": "prepare", "message": "fitting the head on the pretrained features first"})
            _fit_head_first(model, head, train_x, train_y, crop, device, config, len(classes), group=ranks)

    # -- optimizer ------------------------------------------------------------------------------
    forward = ranks.wrap(forward, sync_bn=config.sync_bn)  # DDP: gradients all-reduced over the ranks
    optimizer = make_optimizer(config.solver, param_groups(model, head, config), lr=config.lr,
                               momentum=config.momentum, weight_decay=config.weight_decay)
    # Mixed precision: autocast to bf16 or fp16; fp16 gradients underflow, so a GradScaler scales the
    # loss (a no-op pass-through for bf16 and float32).
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    lr_at = lambda epoch: learning_rate(config.lr_policy, epoch, epochs=config.epochs, base_lr=config.lr,  # noqa: E731
                                        step_size=config.step_size, step_values=config.step_values,
                                        gamma=config.gamma, power=config.power)
    state = {"epoch": 0, "best": None, "history": [], "elapsed": 0.0, "stale": 0, "epochs": config.epochs}
    if saved is not None:
        state = snapshots.restore(saved, folder, model, optimizer, generator, scaler)
        if here.rank:  # rank 0's augmentation stream was saved; the others draw their own
            generator.manual_seed(config.seed + 1_000_003 * here.rank + state["epoch"])
    emit({"type": "start", "name": config.name, "classes": classes, "cached_features": cached, "resumed": resume,
          "bf16": amp is torch.bfloat16, "precision": _PRECISION_NAMES[amp],
          "epoch": state["epoch"], "epochs": config.epochs, "train_images": len(train_y), "val_images": len(val_y),
          "device": str(device), "world_size": here.size})
    if resume and main:
        _catch_up(folder, store, emit, config.name, state, here.size)

    # -- loop -----------------------------------------------------------------------------------
    iters = len(train_batches)
    log_every = config.log_every or max(1, iters // 10)
    started = clock - state["elapsed"]
    # A run that had stopped early (and was killed while writing its bundle) trains no further epoch
    # when resumed; given a new total (resume points before the total was kept count as one), its
    # patience starts again.
    stopped_early = bool(config.early_stop) and state["stale"] >= config.early_stop
    if stopped_early and state.get("epochs") != config.epochs:
        state["stale"], stopped_early = 0, False
    state["epochs"] = config.epochs
    if stopped_early:
        emit({"type": "early_stop", "epoch": state["epoch"], "best_epoch": state["best"]})
    for epoch in range(state["epoch"] + 1, (state["epoch"] if stopped_early else config.epochs) + 1):
        _train_mode(model, keep_statistics=config.finetune)
        train_batches.set_epoch(epoch)
        seen, loss_sum, tick = 0, 0.0, time.perf_counter()
        for i, (x, y) in enumerate(train_batches):
            if ranks.agree(main and folder.abort_requested()):  # a stop asked of rank 0 stops every rank here
                raise Aborted
            lr = lr_at(epoch - 1 + i / iters)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            x, y = _to(x, device), y.to(device)
            with autocast:
                loss = _loss(forward(x), y, smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)  # skipped when fp16 gradients overflowed; the scale then shrinks
            scaler.update()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(f"the training loss became {loss_value} in epoch {epoch}: the learning rate "
                                    f"{lr:g} is too high for this network; try --lr {config.lr / 10:g}")
            seen, loss_sum = seen + len(y), loss_sum + loss_value * len(y)
            if (i + 1) % log_every == 0 or i + 1 == iters:
                all_loss, all_seen = ranks.sum([loss_sum, seen])  # the global batch's figures
                emit({"type": "iteration", "epoch": round(epoch - 1 + (i + 1) / iters, 4), "train_loss": all_loss / all_seen,
                      "lr": lr, "images_per_s": all_seen / (time.perf_counter() - tick),
                      "elapsed_s": time.perf_counter() - started})
        record = {"epoch": epoch, "train_loss": all_loss / all_seen, "lr": lr,
                  "images_per_s": all_seen / (time.perf_counter() - tick)}
        if epoch % config.val_every == 0 or epoch == config.epochs:
            record.update(evaluate(_unwrapped(forward), val_batches, len(classes), device, model, group=ranks))
            best = _best(state)
            improved = best is None or _better(record, best)
            state["stale"] = 0 if improved else state["stale"] + 1
            if improved and main:
                snapshots.stage_best(folder, model, epoch)
            if improved:
                state["best"] = epoch
        record["elapsed_s"] = time.perf_counter() - started
        state["history"].append(record)
        state["epoch"], state["elapsed"] = epoch, record["elapsed_s"]
        if main:
            if config.snapshot_every and epoch % config.snapshot_every == 0:
                save_weights(folder.snapshot(epoch), model, epoch=epoch)
            snapshots.save_state(folder, model, optimizer, generator, state, scaler)
            _store_progress(store, config.name, state, here.size)
        emit({"type": "epoch", **record})
        if config.early_stop and state["stale"] >= config.early_stop:
            emit({"type": "early_stop", "epoch": epoch, "best_epoch": state["best"]})
            break

    # -- bundle ---------------------------------------------------------------------------------
    from shoal.bundle.writer import export_model

    history = [h for h in state["history"] if "val_accuracy" in h]
    if not main:  # rank 0 writes the bundle
        return TrainResult(config.name, "done", folder.path, None, history, state["best"])
    emit({"type": "export", "message": f"writing the bundle of epoch {state['best']} (ONNX export, checked against torch)"})
    # The network built above, on the CPU, takes the best epoch's weights: the writer neither rebuilds
    # it nor opens the dataset again (shoal export alone does both).
    out = export_model(config.name, epoch="best", store=store, out=folder.bundle_path,
                       model=model.to("cpu", memory_format=torch.contiguous_format), dataset=dataset)
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


def _rank_device(name: str, here: distributed.World) -> torch.device:
    """The device of this rank: one GPU per process of a data-parallel run on CUDA (``LOCAL_RANK``)."""
    if name.startswith("cuda:") and here.size > 1:
        raise TrainingError(f"--device {name} names one GPU, and a data-parallel run takes one GPU per process: use "
                            "--device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES), or drop --nproc")
    if name != "cuda" or here.size == 1:
        return torch.device(name)
    count = torch.cuda.device_count()
    if here.local_rank >= count:
        raise TrainingError(f"process {here.local_rank} of this machine has no GPU of its own ({count} visible): "
                            f"start at most {count} processes per machine (--nproc {count})")
    return torch.device("cuda", here.local_rank)


def _unwrapped(module: Any) -> Any:
    """The module inside DDP (validation needs no gradient exchange)."""
    return getattr(module, "module", module)


_PRECISION_NAMES = {None: "float32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of training steps on ``device``: None (float32), bf16 or fp16.

    ``auto`` is bf16 where the chip computes it natively (CUDA GPUs from Ampere on; CPUs with
    AVX-512 BF16 or AMX), fp16 on older CUDA GPUs (the loop adds a GradScaler), else float32.
    Measured with bench/cpu_options.py on a 2-core AMD EPYC with avx512_bf16: AlexNet training
    steps 2.1x faster than float32. Validation and the exported model stay float32.

    Raises:
        TrainingError: bf16 asked of a device without it, or fp16 of one that is not a CUDA GPU.
    """
    if precision == "float32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        native = device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return torch.bfloat16 if native else None
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError(f"precision 'fp16' needs a CUDA GPU (this run is on {device.type}); use --precision bf16 "
                            "or float32")
    if device.type not in ("cpu", "cuda"):
        raise TrainingError(f"precision 'bf16' is not available on {device.type}; use --precision float32")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The batch on ``device``: through pinned memory to a GPU, so the copy overlaps the computation."""
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def param_groups(model: torch.nn.Module, head: torch.nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups, each with its ``lr_scale``: end to end from pretrained
    weights, the backbone learns at a fraction of the head's rate (:func:`backbone_scale`)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head.parameters()}
    head_only = {id(p) for p in trainable} <= head_ids
    groups = [{"params": [p for p in trainable if id(p) not in head_ids],
               "lr_scale": backbone_scale(config) if not head_only else 1.0},
              {"params": [p for p in trainable if id(p) in head_ids], "lr_scale": 1.0}]
    return [g for g in groups if g["params"]]


def _loss(output: Any, target: torch.Tensor, *, smoothing: float = 0.0) -> torch.Tensor:
    # GoogLeNet in training mode also returns its two auxiliary heads, weighted 0.3 as in the paper.
    if isinstance(output, tuple):
        main, *aux = output
        return (F.cross_entropy(main, target, label_smoothing=smoothing)
                + 0.3 * sum(F.cross_entropy(a, target, label_smoothing=smoothing) for a in aux if a is not None))
    return F.cross_entropy(output, target, label_smoothing=smoothing)


def _fit_head_first(model: NormalizedNet, head: torch.nn.Linear, images: Any, labels: Any,
                    crop: tuple[int, int] | None, device: torch.device, config: TrainConfig, num_classes: int, *,
                    group: distributed.Group | None = None) -> None:
    """Start end-to-end fine-tuning from the fitted head on the pretrained features (linear probe,
    then fine-tune: Kumar et al., 2022), not from a random head whose gradients would first
    scramble the backbone. In a data-parallel run every rank computes its share of the features
    and rank 0 fits the head (DDP gives the others rank 0's weights)."""
    from shoal.training.head import fit_head

    features, targets = _FeatureCache(model, crop, device, config.batch_size, group=group).of(images, labels, flip=False)
    if group is not None and not group.world.main:
        return
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
             device: torch.device, model: torch.nn.Module, *, group: distributed.Group | None = None) -> dict[str, float]:
    """Return validation loss, top-1 accuracy (and top-5 with at least 5 classes).

    In a data-parallel run each rank validates its shard and the sums are all-reduced.
    """
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
    if group is not None:
        loss_sum, top1, top5, n = group.sum([loss_sum, top1, top5, n])
    metrics = {"val_loss": loss_sum / n, "val_accuracy": top1 / n}
    if num_classes >= 5:
        metrics["val_top5"] = top5 / n
    return metrics


def _store_progress(store: Store, name: str, state: dict[str, Any], world_size: int) -> None:
    """The model's row in the store: its last epoch and its best (what ``model list`` and the web show)."""
    best = _best(state)
    store.update("model", name, summary={"epoch": state["epoch"], "best_epoch": state["best"],
                                         "val_accuracy": best["val_accuracy"] if best else None,
                                         "world_size": world_size})


def _catch_up(folder: ModelFolder, store: Store, emit: Emitter, name: str, state: dict[str, Any],
              world_size: int) -> None:
    """Log the epochs of the resume point the killed run had not logged yet, and store its progress
    (a kill can fall between the resume point and the log line and store row that follow it)."""
    logged = {e.get("epoch") for e in folder.events() if e["type"] == "epoch"}
    for record in state["history"]:
        if record["epoch"] not in logged:
            emit({"type": "epoch", **record})
    _store_progress(store, name, state, world_size)


def _best(state: dict[str, Any]) -> dict[str, Any] | None:
    """The record of the best validated epoch so far."""
    return next((h for h in state["history"] if h["epoch"] == state["best"]), None)


def _better(record: dict[str, Any], best: dict[str, Any]) -> bool:
    if record["val_accuracy"] != best["val_accuracy"]:
        return record["val_accuracy"] > best["val_accuracy"]
    return record["val_loss"] < best["val_loss"]


class _FeatureCache:
    """Backbone features of fixed views (centre crop, and its mirror), computed once.

    In a data-parallel run each rank computes the features of its share of the images and
    every rank receives them all (all-gathered), so the backbone sees each image once in all.
    """

    def __init__(self, model: NormalizedNet, crop: tuple[int, int] | None, device: torch.device, batch_size: int,
                 on_batch: Callable[[int], None] | None = None, *, group: distributed.Group | None = None) -> None:
        self.model, self.crop, self.device, self.batch_size = model, crop, device, max(batch_size, 32)
        self.extract = networks.feature_extractor(model.net)
        self.on_batch, self.done = on_batch, 0  # told how many images are done, across calls of of()
        self.group = group

    @torch.no_grad()
    def of(self, images: Any, labels: Any, *, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        if self.group is None or self.group.size == 1:
            return self._views(images, labels, flip=flip)
        share = self.group.shard(len(labels))
        empty = share.start == share.stop  # more ranks than images: one image, for the features' width
        features, targets = self._views(images[slice(0, 1) if empty else share],
                                        labels[slice(0, 1) if empty else share], flip=flip)
        if empty:
            features, targets = features[:0], targets[:0]
        return self.group.all_gather(features), self.group.all_gather(targets.to(features.device)).cpu()

    def _views(self, images: Any, labels: Any, *, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        views, targets = [], []
        scale = self.group.size if self.group is not None else 1  # progress: every rank does as much
        for x, y in PixelBatches(images, labels, batch_size=self.batch_size, crop=self.crop, train=False):
            for mirrored in (False, True) if flip else (False,):
                pixels = _to(x.flip(3) if mirrored else x, self.device)
                views.append(self.extract(self.model.normalize(pixels)).flatten(1))
                targets.append(y)
            self.done += len(y) * scale
            if self.on_batch is not None:
                self.on_batch(self.done)
        return torch.cat(views), torch.cat(targets)
