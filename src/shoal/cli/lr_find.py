"""``shoal lr-find``: the learning-rate range test for training with the loop; saves the curve, suggests a rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from shoal.cli import ConfigCommand, app, config_option
from shoal.training.config import TrainConfig

err = Console(stderr=True, highlight=False, soft_wrap=True)

LR_FIND_EXAMPLES = """
Examples:

  shoal lr-find --dataset digits --network lenet                  # from scratch

  shoal lr-find --dataset dolphins --pretrained --freeze none --out lr/   # end-to-end fine-tuning
"""


@app.command("lr-find", epilog=LR_FIND_EXAMPLES, cls=ConfigCommand)
def lr_find_command(
    dataset: Optional[str] = config_option(TrainConfig, "dataset", "--dataset", "-d"),
    network: Optional[str] = config_option(TrainConfig, "network", "--network", "-n"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="JSON file of options; flags override it."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Start from the network's own ImageNet weights (fine-tuning)."),
    freeze: Optional[str] = config_option(TrainConfig, "freeze", "--freeze"),
    head: Optional[str] = config_option(TrainConfig, "head", "--head"),
    solver: Optional[str] = config_option(TrainConfig, "solver", "--solver"),
    batch_size: Optional[int] = config_option(TrainConfig, "batch_size", "--batch-size"),
    momentum: Optional[float] = config_option(TrainConfig, "momentum", "--momentum"),
    weight_decay: Optional[float] = config_option(TrainConfig, "weight_decay", "--weight-decay"),
    seed: Optional[int] = config_option(TrainConfig, "seed", "--seed"),
    device: Optional[str] = config_option(TrainConfig, "device", "--device"),
    start: float = typer.Option(1e-7, "--start", help="The lowest rate tried."),
    end: float = typer.Option(10.0, "--end", help="The highest rate tried."),
    iterations: int = typer.Option(100, "--iterations", help="Steps, one rate each."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for lr_find.png and lr_find.json "
                                       "(default: $SHOAL_HOME/lr-find/DATASET-NETWORK)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run the learning-rate range test (Smith 2015, as fastai's lr_find) and suggest a rate.

    For training with the loop (from scratch, --head sgd, or --freeze none); a fitted head has no rate.
    """
    from shoal.config import build
    from shoal.extras import require
    from shoal.training.lr_find import default_folder, lr_find

    require("train", "shoal lr-find")
    config = build(TrainConfig, config_file, dataset=dataset, network=network, pretrained=True if pretrained else None, freeze=freeze,
                   head=head, solver=solver, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                   seed=seed, device=device)
    with err.status("Trying learning rates …") as status:
        finding = lr_find(config, start=start, end=end, iterations=iterations,
                          on_event=lambda e: status.update(f"Trying learning rates: {e['done']}/{e['total']}, "
                                                           f"{e['lr']:.2g} …"))
    data, image = finding.save(out or default_folder(config))
    if as_json:
        typer.echo(json.dumps({**finding.to_dict(), "json": str(data), "png": str(image)}))
        return
    typer.echo(f"suggested learning rate: {finding.valley:.2g} (valley); steepest descent: {finding.steep:.2g}")
    typer.echo(finding.explanation)
    typer.echo(f"curve: {image} (data: {data}); train with --lr {finding.valley:.2g}")
