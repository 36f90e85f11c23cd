"""Two models side by side (``shoal evaluate A B``), on images whose label neither dataset version changed.

After a review, model B is trained on ``birds@2`` where model A was trained on ``birds``. Their
own validation accuracies are not comparable: the labels differ. :func:`compare` scores both on
the same images with the same labels:

- the **test split**, when both datasets have one: the images both have, with the same label;
- otherwise the **validation images** both datasets have with the same label (an image that a
  version relabelled or left out is not used, so a review cannot grade its own edits).

Torch-free: both models run through their bundles (ONNX Runtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shoal.errors import DatasetError
from shoal.evaluate import Evaluation, on_dataset, own_dataset, score
from shoal.store import Store


@dataclass(frozen=True)
class Comparison:
    """Two evaluations on the same images.

    Attributes:
        split: ``test`` or ``val``.
        images: how many images both were scored on.
        left_out: images of the split not used (changed, in only one of the datasets, or a source
            file that could not be read again for a model of another input size).
        first, second: the two :class:`~shoal.evaluate.Evaluation`.
    """

    split: str
    images: int
    left_out: int
    first: Evaluation
    second: Evaluation

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "images": self.images, "left_out": self.left_out,
                "models": [self.first.to_dict(), self.second.to_dict()]}

    def summary(self) -> str:
        """A side-by-side table of the headline figures."""
        a, b = self.first, self.second
        width = max(len(a.name), len(b.name), 12)
        lines = [f"{a.name} vs {b.name}: {self.images} {self.split} images with the same label in both datasets"
                 + (f" ({self.left_out} changed, in one only or unreadable, not used)" if self.left_out else "")]
        lines.append(f"{'':<14}{a.name:>{width}}  {b.name:>{width}}")

        def row(title: str, x: float | None, y: float | None, fmt: str) -> None:
            shown = [format(v, fmt) if v is not None else "-" for v in (x, y)]
            lines.append(f"{title:<14}{shown[0]:>{width}}  {shown[1]:>{width}}")

        row("accuracy", a.accuracy, b.accuracy, ".1%")
        row("log-loss", a.log_loss, b.log_loss, ".3f")
        row("ECE", a.calibration.ece, b.calibration.ece, ".3f")
        row("unfamiliar", a.unfamiliar_rate, b.unfamiliar_rate, ".1%")
        better = "the same accuracy" if a.accuracy == b.accuracy else (
            f"{a.name if a.accuracy > b.accuracy else b.name} is more accurate")
        lines.append(f"{better}; lower log-loss is better ({a.name if a.log_loss <= b.log_loss else b.name})")
        return "\n".join(lines)


def compare(first: str, second: str, *, store: Store | None = None, batch_size: int = 32) -> Comparison:
    """Score two trained models on the images whose label both of their datasets agree on.

    Args:
        first, second: model names (or bundles) whose datasets are in the store.
        store: where the datasets are.
        batch_size: images per run of a network.

    Raises:
        DatasetError: the models have different classes, one records no dataset, or no image is
            left to compare on.
        NotFoundError: a model's dataset is no longer in the store.
    """
    from shoal import datasets
    from shoal.inference import load

    store = Store() if store is None else store
    models = [load(first), load(second)]
    if list(models[0].labels) != list(models[1].labels):
        raise DatasetError(f"{first!r} and {second!r} have different classes ({models[0].labels} and "
                           f"{models[1].labels}); compare models of the same classes")
    sets = [datasets.load(own_dataset(model, name, store, comparing=True), store=store)
            for name, model in zip((first, second), models)]
    split = "test" if all(ds.count("test") for ds in sets) else "val"
    sources = [ds.sources(split) for ds in sets]
    labelled = [dict(zip(names, (ds.classes[y] for y in ds.labels(split).tolist())))
                for ds, names in zip(sets, sources)]
    common = [p for p in labelled[0] if labelled[1].get(p) == labelled[0][p]]
    left_out = len(set(labelled[0]) | set(labelled[1])) - len(common)
    if not common:
        raise DatasetError(f"no {split} image has the same label in datasets {sets[0].name!r} and {sets[1].name!r}; "
                           "evaluate each on a folder of class sub-folders instead")
    runs = []
    for model, ds, names in zip(models, sets, sources):
        row = {p: i for i, p in enumerate(names)}
        runs.append(on_dataset(model, ds, split, batch_size, rows=[row[p] for p in common], sources=names))
    scored = set(runs[0].sources) & set(runs[1].sources)  # a source file one model could not read again: by neither
    if not scored:
        raise DatasetError(f"none of the {len(common)} {split} images both datasets agree on could be run by both "
                           "models; evaluate each on a folder of class sub-folders instead")
    results = []
    for name, model, ds, run in zip((first, second), models, sets, runs):
        keep = np.array([p in scored for p in run.sources], bool)
        results.append(score(model.labels, run.probs[keep], run.truth[keep], [p for p in run.sources if p in scored],
                             model=str(model.path), name=model.manifest.get("name") or name,
                             on=f"{split} images both datasets agree on", dataset=ds.name, skipped=run.skipped,
                             unfamiliar_scores=run.scores[keep] if run.scores is not None else None,
                             unfamiliar_threshold=model.unfamiliar_threshold, unfamiliar_reason=model.unfamiliar_reason))
    left_out += len(common) - len(scored)
    return Comparison(split, len(scored), left_out, results[0], results[1])
