"""The learning-rate range test (Smith, "Cyclical learning rates for training neural networks", 2015),
as fastai's ``lr_find`` runs it, for training with the loop (end to end, or ``--head sgd``).

A fresh model (built exactly as ``train`` would build it) takes one mini-batch step per rate,
the rate growing exponentially from ``start`` to ``end``; the training loss, smoothed by an
exponential moving average (bias-corrected), is recorded against it. The test stops when the
smoothed loss exceeds ``diverge`` times its minimum. Two suggestions are read off the curve:

- **valley** (fastai's default): the longest stretch over which the loss keeps falling, and a
  rate two thirds of the way down it (in steps): late enough to learn fast, before the bottom
  where the loss turns up again;
- **steepest**: the rate where the smoothed loss falls fastest against ``log(rate)``.

The suggestion is the valley. The model is thrown away afterwards; nothing is stored but the
curve (:meth:`LRFinding.save`: ``lr_find.json`` and ``lr_find.png``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoal.errors import TrainingError
from shoal.store import Store
from shoal.training.config import TrainConfig

EventHandler = Callable[[dict[str, Any]], None]

EXPLANATION = ("The loss was measured after one step at each rate, the rate growing from {start:.2g} to {end:.2g}. "
               "Below about {low:.2g} the loss barely moves (too slow to learn); past {high:.2g}, its lowest point, it "
               "turns up (the steps overshoot). The valley ({valley:.2g}) lies two thirds of the way down the longest "
               "stretch where the loss keeps falling: fast, yet safely below where it diverges. The steepest "
               "descent ({steep:.2g}) is where the loss falls fastest.")


@dataclass(frozen=True)
class LRFinding:
    """The curve of a range test and the rates read off it.

    Attributes:
        lrs: the rates tried, increasing.
        losses: the raw training loss after each step.
        smoothed: the exponentially smoothed loss (what the suggestions use).
        valley: the suggested rate (fastai's ``valley``).
        steep: the rate of steepest descent.
        explanation: the suggestion in words.
        config: the training configuration it was run with.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    valley: float
    steep: float
    explanation: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def suggestion(self) -> float:
        return self.valley

    def to_dict(self) -> dict[str, Any]:
        return {"suggestion": self.valley, "valley": self.valley, "steep": self.steep, "explanation": self.explanation,
                "lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed, "config": self.config}

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``lr_find.json`` and the curve ``lr_find.png`` (loss against the rate, log axis) into ``folder``."""
        out = Path(folder).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        data = out / "lr_find.json"
        data.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        image = out / "lr_find.png"
        _plot(self).save(image)
        return data, image


# The smoothed loss must fall at least this fraction below its starting level for a suggestion.
MIN_FALL = 0.05


def lr_find(config: TrainConfig, *, start: float = 1e-7, end: float = 10.0, iterations: int = 100,
            beta: float = 0.98, diverge: float = 4.0, store: Store | None = None,
            on_event: EventHandler | None = None) -> LRFinding:
    """Run the range test for ``config`` (its dataset, network, freeze, solver, batch size...).

    Args:
        config: as for :func:`shoal.training.train`; its ``lr`` is ignored.
        start, end: the range of rates, ``0 < start < end``.
        iterations: steps (one rate each) at most.
        beta: smoothing of the loss (fastai: 0.98).
        diverge: stop once the smoothed loss exceeds this many times its minimum.
        store: where the dataset is.
        on_event: told ``{"type": "lr_find", "done", "total", "lr", "loss"}`` after each step.

    Raises:
        TrainingError: the configuration fits its head (no learning rate), the dataset is empty, or the
            loss diverged at once or never fell (no rate to suggest).
        ConfigError: a bad range or count.
    """
    from shoal.config import check_int
    from shoal.errors import ConfigError

    check_int("iterations", iterations, minimum=5)
    if not (0 < start < end) or not math.isfinite(end):
        raise ConfigError(f"the range must have 0 < start < end, got start={start:g}, end={end:g}")
    resolved = config.resolved()
    if resolved.head == "fit":
        raise TrainingError("a fitted head has no learning rate to find (its strength is cross-validated); "
                            "lr-find serves the training loop: add --head sgd or --freeze none")
    import torch

    from shoal import datasets
    from shoal.config import to_dict
    from shoal.machine import torch_device
    from shoal.networks import classifier_head
    from shoal.training.batches import PixelBatches
    from shoal.training.loop import _fit_head_first, _loss, _to, _train_mode, build_model, param_groups
    from shoal.training.solvers import make_optimizer

    store = Store() if store is None else store
    dataset = datasets.load(resolved.dataset, store=store)
    if dataset.count("train") == 0:
        raise TrainingError(f"dataset {dataset.name!r} has no training images")
    torch.manual_seed(resolved.seed)
    generator = torch.Generator().manual_seed(resolved.seed)
    device = torch.device(torch_device(resolved.device))
    model, card = build_model(resolved, dataset)
    model.to(device)
    head = classifier_head(model.net)
    # The model the loop would train: end to end from pretrained weights it starts from the fitted head,
    # and keeps the pretrained batch-norm statistics.
    backbone_trains = {id(p) for p in model.parameters() if p.requires_grad} > {id(p) for p in head.parameters()}
    if resolved.finetune and isinstance(head, torch.nn.Linear) and backbone_trains:
        _fit_head_first(model, head, dataset.images("train"), dataset.labels("train"), card.input.crop_hw, device,
                        resolved, len(dataset.classes))
    _train_mode(model, keep_statistics=resolved.finetune)
    optimizer = make_optimizer(resolved.solver, param_groups(model, head, resolved), lr=start,
                               momentum=resolved.momentum, weight_decay=resolved.weight_decay)
    batches = PixelBatches(dataset.images("train"), dataset.labels("train"), batch_size=resolved.batch_size,
                           crop=card.input.crop_hw, train=True, flip=resolved.flip, color_jitter=resolved.color_jitter,
                           generator=generator, seed=resolved.seed)
    ratio = (end / start) ** (1 / (iterations - 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, epoch = 0.0, math.inf, 0
    stream = iter(())
    for step in range(iterations):
        try:
            x, y = next(stream)
        except StopIteration:
            epoch += 1
            batches.set_epoch(epoch)
            stream = iter(batches)
            x, y = next(stream)
        lr = start * ratio ** step
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        loss = _loss(model(_to(x, device)), y.to(device), smoothing=resolved.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.item())
        if not math.isfinite(value):
            break
        average = beta * average + (1 - beta) * value
        current = average / (1 - beta ** (step + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(current)
        if on_event is not None:
            on_event({"type": "lr_find", "done": step + 1, "total": iterations, "lr": lr, "loss": current})
        best = min(best, current)
        if step > 0 and current > diverge * best:
            break
    if len(lrs) < 5:
        raise TrainingError(f"the loss diverged after {len(lrs)} steps, at {lrs[-1] if lrs else start:g}; "
                            "start the range lower (--start)")
    # Where the loss starts: the lower of its first value and the median of the first tenth (a curve that
    # only rose, or stayed flat, must not pass for one that fell).
    level = min(smoothed[0], float(np.median(smoothed[: max(1, len(smoothed) // 10)])))
    if min(smoothed) > (1 - MIN_FALL) * level:  # a flat curve's "valley" would be noise
        raise TrainingError(f"the loss did not fall over the range ({start:g} to {lrs[-1]:.2g}, {len(lrs)} steps; it "
                            f"stayed near {level:.3g}), so there is no rate to suggest: give the test more steps "
                            "(--iterations), another solver (e.g. --solver adam) or a wider range")
    judged = judged_steps(len(lrs), iterations)
    valley, steep = suggest(lrs[judged], smoothed[judged])
    low, high = falling_range(lrs, smoothed)
    text = EXPLANATION.format(start=start, end=lrs[-1], low=low, high=high, valley=valley, steep=steep)
    return LRFinding(lrs, losses, smoothed, valley, steep, text, to_dict(resolved))


FITTED_HEAD_REFUSAL = ("--lr find: a fitted head has no learning rate (its strength is cross-validated); "
                       "add --head sgd or --freeze none to train with the loop, or leave out --lr")


def with_found_lr(config: TrainConfig, *, store: Store | None = None, on_event: EventHandler | None = None,
                  **range_test: Any) -> tuple[TrainConfig, LRFinding]:
    """``shoal train --lr find``: ``config`` with the range test's suggestion (the valley) as its ``lr``.

    The rate is rounded to two significant figures, as it is printed. ``range_test`` goes to
    :func:`lr_find` (``start``, ``end``, ``iterations``...).

    Raises:
        ConfigError: the configuration fits its head (:data:`FITTED_HEAD_REFUSAL`), checked
            before anything is trained.
    """
    import dataclasses

    from shoal.errors import ConfigError

    if config.resolved().head == "fit":
        raise ConfigError(FITTED_HEAD_REFUSAL)
    finding = lr_find(config, store=store, on_event=on_event, **range_test)
    return dataclasses.replace(config, lr=float(f"{finding.suggestion:.2g}")), finding


def default_folder(config: TrainConfig, *, store: Store | None = None) -> Path:
    """Where ``shoal lr-find`` (without ``--out``) and ``shoal train --lr find`` save the curve:
    ``$SHOAL_HOME/lr-find/DATASET-NETWORK``."""
    resolved = config.resolved()
    store = Store() if store is None else store
    return store.home / "lr-find" / f"{resolved.dataset}-{resolved.network}"


def judged_steps(steps: int, iterations: int) -> slice:
    """The steps a suggestion is drawn from, of ``steps`` (at least 5) taken out of ``iterations``: as
    fastai, not the first tenth (the average still settling) nor the last five (diverging); a test that
    diverged early keeps five."""
    first = min(iterations // 10, steps - 5)
    return slice(first, max(first + 5, steps - 5))


def suggest(lrs: list[float], losses: list[float]) -> tuple[float, float]:
    """``(valley, steepest)`` rates of a loss curve (fastai's ``valley`` and ``steep`` suggestions).

    Example:
        >>> lrs = [10 ** (i / 10 - 5) for i in range(50)]
        >>> losses = [2.0] * 15 + [2.0 - 0.1 * i for i in range(15)] + [0.6 + 0.5 * i for i in range(20)]
        >>> valley, steep = suggest(lrs, losses)
        >>> lrs[15] <= valley <= lrs[29] and lrs[14] <= steep <= lrs[30]
        True
    """
    n = len(losses)
    longest = [1] * n  # the longest strictly falling run of points ending at i (not necessarily adjacent)
    end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end = i
    begin = end - longest[end]
    third = (end - begin) / 3
    valley = lrs[min(n - 1, max(0, begin + int(third) + int(third / 2)))]
    slope = np.gradient(np.asarray(losses), np.log(np.asarray(lrs)))
    steep = lrs[int(np.argmin(slope))]
    return float(valley), float(steep)


def falling_range(lrs: list[float], losses: list[float]) -> tuple[float, float]:
    """The rates over which the loss falls: from where it is 10 % of its whole drop below its starting
    level (the median of the first tenth) to where it is lowest."""
    values = np.asarray(losses)
    bottom = int(np.argmin(values))
    level = float(np.median(values[:max(1, len(values) // 10)]))
    falling = np.flatnonzero(values[:bottom + 1] < level - 0.1 * (level - values[bottom]))
    low = lrs[int(falling[0])] if len(falling) else lrs[0]
    return float(low), float(lrs[bottom])


def _plot(finding: LRFinding, size: tuple[int, int] = (640, 400)) -> Any:
    """The curve as a PIL image: smoothed loss (and the raw loss, faint) against log10 of the rate."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 60, 20, 20, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    x = np.log10(np.asarray(finding.lrs))
    smooth = np.asarray(finding.smoothed)
    raw = np.asarray(finding.losses)
    low, high = float(min(smooth.min(), raw.min())), float(min(max(smooth.max(), raw.max()), 4 * smooth.min() + 1e-9))
    high = max(high, low + 1e-6)

    def at(lx: float, loss: float) -> tuple[float, float]:
        px = left + (lx - x[0]) / max(x[-1] - x[0], 1e-9) * (width - left - right)
        py = top + (1 - (min(loss, high) - low) / (high - low)) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline=(160, 160, 160))
    for decade in range(math.ceil(x[0]), math.floor(x[-1]) + 1):
        px, _ = at(decade, low)
        draw.line([px, top, px, height - bottom], fill=(230, 230, 230))
        draw.text((px - 12, height - bottom + 6), f"1e{decade}", fill=(80, 80, 80))
    draw.text((left, height - 16), "learning rate (log scale)", fill=(0, 0, 0))
    draw.text((4, top), f"{high:.2f}", fill=(80, 80, 80))
    draw.text((4, height - bottom - 10), f"{low:.2f}", fill=(80, 80, 80))
    draw.line([at(a, b) for a, b in zip(x, raw)], fill=(200, 210, 235), width=1)
    draw.line([at(a, b) for a, b in zip(x, smooth)], fill=(30, 90, 200), width=2)
    for rate, colour, name in ((finding.valley, (200, 40, 40), "valley"), (finding.steep, (40, 150, 40), "steepest")):
        px, _ = at(math.log10(rate), low)
        draw.line([px, top, px, height - bottom], fill=colour, width=1)
        draw.text((px + 3, top + (0 if name == "valley" else 14)), f"{name} {rate:.2g}", fill=colour)
    return image
