"""Training benchmark: shoal's defaults against a plain PyTorch transfer-learning loop.

    .venv/bin/python bench/train.py ../shared/data/dolphins-and-seahorses

(a) fine-tune EfficientNet-Lite0 with shoal's defaults: seconds until validation accuracy
    first reaches 100 %, total seconds, training images/s;
(b) AlexNet from scratch, 30 epochs, defaults: total time and final validation accuracy;
(c) the baseline: the PyTorch transfer-learning tutorial's loop (ImageFolder-style decoding
    of the JPEGs through torchvision transforms every epoch, full fine-tuning with SGD 0.001)
    on the same split and the same Lite0 weights, until 100 % validation accuracy or a cap.

Runs in a temporary SHOAL_HOME; prints figures and ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder-per-class images")
    parser.add_argument("--skip-alexnet", action="store_true", help="skip (b)")
    parser.add_argument("--baseline-epochs", type=int, default=4, help="cap of the baseline loop (c)")
    args = parser.parse_args()
    os.environ["SHOAL_HOME"] = tempfile.mkdtemp(prefix="shoal-bench-train-")

    from shoal import datasets
    from shoal.training import TrainConfig, train

    t = time.perf_counter()
    dataset = datasets.create(args.folder, "bench")
    print(f"dataset: {sum(dataset.splits['train'].values())} train / {sum(dataset.splits['val'].values())} val images "
          f"built in {time.perf_counter() - t:.2f} s")

    # (a) shoal fine-tune, defaults
    first_full: list[float] = []
    result = _timed_train(train, TrainConfig(dataset="bench", pretrained=True, name="lite0"), first_full)
    a_total, a_hist = result
    rate = sum(h.get("images_per_s", 0) for h in a_hist) / max(len(a_hist), 1)
    to_full = first_full[0] if first_full else None
    print(f"(a) shoal fine-tune Lite0: 100% val after {_s(to_full)}, total {a_total:.1f} s "
          f"({len(a_hist)} epochs, best val acc {max(h['val_accuracy'] for h in a_hist):.1%}, "
          f"{rate:.0f} training images/s on cached features)")

    # (b) AlexNet from scratch
    if not args.skip_alexnet:
        b_total, b_hist = _timed_train(train, TrainConfig(dataset="bench", network="alexnet", name="alexnet"), [])
        print(f"(b) shoal AlexNet from scratch, {len(b_hist)} epochs: {b_total:.1f} s, final val acc "
              f"{b_hist[-1]['val_accuracy']:.1%}, best {max(h['val_accuracy'] for h in b_hist):.1%}")

    # (c) plain PyTorch tutorial loop
    c_full, c_total, c_epochs, c_rate = _tutorial_baseline(dataset, args.baseline_epochs)
    print(f"(c) plain PyTorch tutorial loop: 100% val after {_s(c_full)}, {c_epochs} epochs in {c_total:.1f} s, "
          f"{c_rate:.1f} training images/s")
    if to_full and c_full:
        print(f"ratio (time to 100% val): baseline / shoal = {c_full / to_full:.1f}x")
    elif to_full:
        print(f"ratio (time to 100% val): baseline did not get there in {c_total:.1f} s, "
              f"so at least {c_total / to_full:.1f}x slower than shoal")

def _s(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "never"


def _timed_train(train, config, first_full: list[float]):
    start = time.perf_counter()
    history: list[dict] = []

    def on_event(event: dict) -> None:
        if event["type"] == "epoch" and "val_accuracy" in event:
            history.append(event)
            if event["val_accuracy"] >= 1.0 and not first_full:
                first_full.append(time.perf_counter() - start)

    train(config, on_event=on_event)
    return time.perf_counter() - start, history


def _tutorial_baseline(dataset, max_epochs: int) -> tuple[float | None, float, int, float]:
    """The PyTorch transfer-learning tutorial, Lite0 in place of ResNet-18."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from shoal import networks

    train_tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    val_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                 transforms.Normalize([0.5] * 3, [0.5] * 3)])

    def loader(split: str, tf, shuffle: bool):
        items = list(zip(dataset.sources(split), dataset.labels(split).tolist()))

        class Files(torch.utils.data.Dataset):
            def __len__(self):
                return len(items)

            def __getitem__(self, i):
                path, label = items[i]
                return tf(Image.open(path).convert("RGB")), label

        return torch.utils.data.DataLoader(Files(), batch_size=32, shuffle=shuffle, num_workers=0)

    model = networks.create("efficientnet_lite0", len(dataset.classes), pretrained=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    criterion = torch.nn.CrossEntropyLoss()
    train_loader, val_loader = loader("train", train_tf, True), loader("val", val_tf, False)
    start, first_full, seen, train_time = time.perf_counter(), None, 0, 0.0
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        tick = time.perf_counter()
        for x, y in train_loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
            seen += len(y)
        train_time += time.perf_counter() - tick
        scheduler.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        print(f"    baseline epoch {epoch}: val acc {correct / total:.1%} at {time.perf_counter() - start:.1f} s")
        if correct == total:
            first_full = time.perf_counter() - start
            break
    return first_full, time.perf_counter() - start, epoch, seen / train_time


if __name__ == "__main__":
    main()
