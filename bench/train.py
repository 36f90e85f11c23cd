"""Training benchmark: shoal's default fine-tune against a plain PyTorch loop, in the same run.

    .venv/bin/python bench/train.py ../shared/data/dolphins-and-seahorses [--seeds 0 1 2] [--alexnet]

Every figure is measured from the moment a process is started, as a user waits for it:

(a) ``shoal train --dataset D --pretrained`` (fitted head), the first run ever (the backbone is
    exported to ONNX and cached), then one run per seed with the cached backbone: seconds from
    process start to the validation result (and whether it is 100 %), and to the process's end
    with the bundle written (the ``time`` field of metrics.jsonl events gives the former);
(b) the baseline, a plain PyTorch transfer-learning loop (the tutorial's: torchvision transforms
    decoding the JPEGs every epoch, full fine-tuning of the same Lite0 weights with SGD 0.001),
    in its own process: seconds from its start to its first 100 % validation epoch;
(c) a cold ``shoal classify`` of one image against a cold torch script doing the same;
(d) with ``--alexnet``: AlexNet from scratch, 30 epochs, shoal's defaults.

Runs in a temporary SHOAL_HOME; prints figures and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHOAL = [sys.executable, "-m", "shoal"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder-per-class images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="dataset split seeds for (a)")
    parser.add_argument("--baseline-epochs", type=int, default=4, help="cap of the baseline loop (b)")
    parser.add_argument("--alexnet", action="store_true", help="also (d)")
    parser.add_argument("--baseline", nargs=2, metavar=("HOME", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:  # the child process of (b)
        os.environ["SHOAL_HOME"] = args.baseline[0]
        _tutorial_baseline(args.baseline[1], args.baseline_epochs)
        return
    home = tempfile.mkdtemp(prefix="shoal-bench-train-")
    env = {**os.environ, "SHOAL_HOME": home}
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; store {home}")

    # (a) the default fine-tune, first run ever, then cached, per split seed
    rows = []
    for run, seed in [("first run ever", args.seeds[0]), *((f"cached, seed {s}", s) for s in args.seeds)]:
        dataset = f"bench-{seed}"
        if not (Path(home) / "datasets" / dataset).exists():
            subprocess.run([*SHOAL, "dataset", "create", str(args.folder), "--name", dataset, "--seed", str(seed)],
                           env=env, check=True, capture_output=True)
        name = f"lite0-{len(rows)}"
        started = time.time()
        subprocess.run([*SHOAL, "train", "--dataset", dataset, "--pretrained", "--name", name], env=env, check=True,
                       capture_output=True)
        whole = time.time() - started
        events = [json.loads(line) for line in (Path(home) / "models" / name / "metrics.jsonl").read_text().splitlines()]
        result = next(e for e in events if e["type"] == "epoch")
        rows.append((run, result["time"] - started, whole, result["val_accuracy"], result["val_loss"]))
    print("(a) shoal train --pretrained            val result at   whole process   val acc   val log-loss")
    for run, at, whole, acc, loss in rows:
        print(f"    {run:<34} {at:8.2f} s       {whole:8.2f} s      {acc:6.1%}   {loss:.4f}")

    # (b) the plain PyTorch loop, in a process of its own
    started = time.time()
    out = subprocess.run([sys.executable, __file__, str(args.folder), "--baseline", home, f"bench-{args.seeds[0]}",
                          "--baseline-epochs", str(args.baseline_epochs)], env=env, check=True, capture_output=True,
                         text=True).stdout
    baseline = [json.loads(line) for line in out.splitlines()]
    full = next((e["time"] - started for e in baseline if e["val_accuracy"] >= 1.0), None)
    for e in baseline:
        print(f"    baseline epoch {e['epoch']}: val acc {e['val_accuracy']:.1%} at {e['time'] - started:.1f} s")
    print(f"(b) plain PyTorch loop: 100 % val {'at ' + format(full, '.1f') + ' s' if full else 'never'} from its start "
          f"({len(baseline)} epochs, {time.time() - started:.1f} s in all)")
    ours = rows[1][1] if rows[1][3] >= 1.0 else None
    if full and ours:
        print(f"    ratio (process start to 100 % val): baseline / shoal = {full / ours:.1f}x")

    # (c) cold classification of one image
    image = str(next(iter(sorted(args.folder.rglob("*.jpg")))))
    started = time.time()
    subprocess.run([*SHOAL, "classify", "lite0-1", image], env=env, check=True, capture_output=True)
    shoal_cold = time.time() - started
    script = ("import torch, timm, numpy as np; from PIL import Image; "
              "m = timm.create_model('tf_efficientnet_lite0', num_classes=2).eval(); "
              f"x = np.asarray(Image.open({image!r}).convert('RGB').resize((224, 224)), np.float32); "
              "m(torch.from_numpy((x.transpose(2, 0, 1)[None] - 127.5) / 128))")
    started = time.time()
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    torch_cold = time.time() - started
    print(f"(c) cold classify of one image: shoal classify {shoal_cold:.2f} s, a torch+timm script {torch_cold:.2f} s "
          f"({torch_cold / shoal_cold:.1f}x)")

    # (d) AlexNet from scratch
    if args.alexnet:
        started = time.time()
        subprocess.run([*SHOAL, "train", "--dataset", f"bench-{args.seeds[0]}", "--network", "alexnet", "--name",
                        "alexnet"], env=env, check=True, capture_output=True)
        events = [json.loads(line) for line in (Path(home) / "models" / "alexnet" / "metrics.jsonl").read_text()
                  .splitlines()]
        epochs = [e for e in events if e["type"] == "epoch" and "val_accuracy" in e]
        print(f"(d) AlexNet from scratch, {len(epochs)} epochs: {time.time() - started:.1f} s, final val acc "
              f"{epochs[-1]['val_accuracy']:.1%}, best {max(e['val_accuracy'] for e in epochs):.1%}")


def _tutorial_baseline(dataset_name: str, max_epochs: int) -> None:
    """The PyTorch transfer-learning tutorial, Lite0 in place of ResNet-18; one JSON line per epoch."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from shoal import datasets, networks

    dataset = datasets.load(dataset_name)
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
    for epoch in range(1, max_epochs + 1):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        print(json.dumps({"epoch": epoch, "val_accuracy": correct / total, "time": time.time()}), flush=True)
        if correct == total:
            break


if __name__ == "__main__":
    main()
