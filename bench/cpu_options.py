"""Which CPU speed-ups pay off for shoal's training paths: channels_last, bf16 autocast, torch.compile.

    .venv/bin/python bench/cpu_options.py

Measures, on the same random batch, (1) EfficientNet-Lite0 forward passes as the feature cache
runs them, and (2) AlexNet training steps (forward + backward + SGD) as from-scratch training
runs them, each in plain float32 NCHW (the baseline), channels_last, channels_last + bf16
autocast, and torch.compile (compile time reported separately). Prints images/s and ratios.
"""

from __future__ import annotations

import time

import torch

from shoal import networks


def rate(step, batch: int, repeat: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        step()
    return batch * repeat / (time.perf_counter() - start)


def variants(name: str, make_step, batch: int, repeat: int) -> None:
    results = {}
    for label, channels_last, bf16, compile_ in [("float32 NCHW (baseline)", False, False, False),
                                                 ("channels_last", True, False, False),
                                                 ("channels_last + bf16 autocast", True, True, False),
                                                 ("torch.compile", False, False, True)]:
        step, compile_s = make_step(channels_last, bf16, compile_)
        results[label] = rate(step, batch, repeat)
        extra = f"  (compile + first step {compile_s:.1f} s)" if compile_ else ""
        print(f"{name:<28} {label:<31} {results[label]:7.1f} img/s  "
              f"{results[label] / results['float32 NCHW (baseline)']:.2f}x{extra}", flush=True)


def lite0_features(channels_last: bool, bf16: bool, compile_: bool):
    model = networks.create("efficientnet_lite0", 2, pretrained=True).eval()
    extract = networks.feature_extractor(model)
    x = torch.rand(32, 3, 224, 224) * 2 - 1
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    compile_s = 0.0
    if compile_:
        extract = torch.compile(extract)
        tick = time.perf_counter()
        with torch.no_grad():
            extract(x)
        compile_s = time.perf_counter() - tick

    def step() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            extract(x)

    return step, compile_s


def alexnet_train(channels_last: bool, bf16: bool, compile_: bool):
    model = networks.create("alexnet", 2)
    x, y = torch.rand(32, 3, 224, 224), torch.randint(0, 2, (32,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(model) if compile_ else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(forward(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    compile_s = 0.0
    if compile_:
        tick = time.perf_counter()
        step()
        compile_s = time.perf_counter() - tick
    return step, compile_s


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    variants("Lite0 features (batch 32)", lite0_features, 32, 3)
    variants("AlexNet train step (batch 32)", alexnet_train, 32, 3)
