"""``shoal evaluate``: accuracy, log-loss, calibration, confusion matrix, per-class scores and telling images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from shoal.cli import ConfigCommand, app

err = Console(stderr=True, highlight=False, soft_wrap=True)  # what it is doing, on a terminal

EVALUATE_EXAMPLES = """
Examples:

  shoal evaluate dolphins-efficientnet_lite0                 # the validation split of its own dataset

  shoal evaluate dolphins.shoal --folder new-photos/ --out report.html     # class sub-folders never seen

  shoal evaluate digits-lenet --dataset digits --split test --json

  shoal evaluate birds-efficientnet_lite0 birds@2-efficientnet_lite0    # side by side, on images neither version changed
"""


@app.command(epilog=EVALUATE_EXAMPLES, cls=ConfigCommand)
def evaluate(
    model: str = typer.Argument(..., help="Bundle folder, .shoal file, or the name of a trained model."),
    other: Optional[str] = typer.Argument(
        None, help="A second model to compare with, side by side: on the test split, or on the validation "
                   "images whose label neither model's dataset version changed."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", "-d", help="Stored dataset to evaluate on (default: the one the model was trained on)."),
    split: str = typer.Option("val", "--split", help="val, test or train."),
    folder: Optional[Path] = typer.Option(None, "--folder", help="Instead of a dataset: a folder of class sub-folders."),
    wrong: int = typer.Option(10, "--wrong", min=0, help="How many of the most confidently wrong images to list."),
    top_per_class: int = typer.Option(9, "--top-per-class", min=0,
                                      help="Images predicted as each class kept, surest first (HTML, JSON)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write an HTML report with the images."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score a model on a dataset split or a folder: accuracy, log-loss, calibration, confusion matrix, precision/recall/F1.

    Without --dataset or --folder it uses the dataset the model was trained on.
    """
    if other is not None:
        from shoal.compare import compare
        from shoal.errors import ConfigError

        if dataset is not None or folder is not None or out is not None:
            raise ConfigError("comparing two models uses the images both their datasets agree on: "
                              "leave out --dataset, --folder and --out (or evaluate each model alone)")
        with err.status(f"Comparing {model} and {other} …"):
            compared = compare(model, other)
        typer.echo(json.dumps(compared.to_dict()) if as_json else compared.summary())
        return
    from shoal.evaluate import evaluate as run, write_html

    on = f"the images in {folder}" if folder is not None else (
        f"the {split} split of {dataset}" if dataset is not None else f"the {split} split of its own dataset")
    with err.status(f"Evaluating {model} on {on} …"):  # on a terminal only, gone when done
        report = run(model, dataset=dataset, split=split, folder=folder, wrong=wrong, top_per_class=top_per_class)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        typer.echo(report.summary())
    if out is not None:
        path = write_html(report, out)
        typer.echo(f"Report: {path}", err=True)
