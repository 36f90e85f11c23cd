"""End-to-end fine-tuning (``--freeze none``): which learning rate, judged on photos held out of both splits.

    .venv/bin/python bench/finetune.py ../shared/data/dolphins-and-seahorses [--epochs 5] [--lrs 0.01 0.003]

Each split seed builds a dataset with 20 % validation and 20 % test photos. Every candidate
(head rate; the backbone learns at a tenth of it, starting from the fitted head; optional label
smoothing) trains end to end; the candidate is chosen on validation log-loss and the test split
is reported alone, so the choice is not tuned on what is reported. The fitted head (no
end-to-end training) is the baseline, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.003])
    parser.add_argument("--smoothing", type=float, nargs="+", default=[0.0, 0.1])
    args = parser.parse_args()
    os.environ["SHOAL_HOME"] = tempfile.mkdtemp(prefix="shoal-bench-finetune-")

    import shoal
    from shoal import datasets
    from shoal.evaluate import evaluate
    from shoal.training import TrainConfig, train

    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {args.epochs} epochs")
    print(f"{'recipe':<34} {'seed':>4} {'val acc':>8} {'val loss':>8} {'test acc':>8} {'test loss':>9} {'time':>7}")
    candidates = [("fitted head (baseline)", {})] + [
        (f"end to end, lr {lr:g}, smoothing {ls:g}",
         dict(head="sgd", freeze="none", lr=lr, epochs=args.epochs, label_smoothing=ls))
        for lr in args.lrs for ls in args.smoothing]
    for seed in args.seeds:
        dataset = datasets.create(args.folder, f"photos-{seed}", seed=seed, val_pct=20, test_pct=20)
        for index, (recipe, options) in enumerate(candidates):
            started = time.perf_counter()
            result = train(TrainConfig(dataset=dataset.name, pretrained=True, name=f"m{seed}-{index}", seed=seed,
                                       **options))
            best = next(h for h in result.history if h["epoch"] == result.best_epoch)
            test = evaluate(shoal.load(result.bundle), dataset=dataset.name, split="test")
            print(f"{recipe:<34} {seed:>4} {best['val_accuracy']:>8.1%} {best['val_loss']:>8.4f} "
                  f"{test.accuracy:>8.1%} {test.log_loss:>9.4f} {time.perf_counter() - started:>6.0f}s", flush=True)


if __name__ == "__main__":
    main()
