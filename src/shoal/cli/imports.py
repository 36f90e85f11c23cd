"""``shoal import caffe``: bring a Caffe or DIGITS classifier into the store (no Caffe needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from shoal.cli import app

err = Console(stderr=True, highlight=False, soft_wrap=True)

import_app = typer.Typer(help="Bring models trained elsewhere into the store.", no_args_is_help=True)
app.add_typer(import_app, name="import")

CAFFE_EXAMPLES = """
Examples:

  shoal import caffe 20170301-120000-ab12_epoch_30.tar.gz --name flowers     # a DIGITS "Download Model" archive

  shoal import caffe ~/digits/jobs/20170301-120000-ab12 --name flowers       # a DIGITS job folder

  shoal import caffe bvlc_googlenet/deploy.prototxt --name googlenet --labels synset_words.txt --mean 104,117,123
"""


def _size(value: Optional[str]) -> Optional[tuple[int, int]]:
    """``--input-size``: ``(width, height)``, as the importer takes it; ``WxH`` or one number for a square."""
    if value is None:
        return None
    from shoal.data.imageops import check_size
    from shoal.errors import ConfigError

    try:
        return check_size(value)
    except ConfigError as exc:
        raise ConfigError(exc.naming({"size": "--input-size"})) from None


@import_app.command("caffe", epilog=CAFFE_EXAMPLES)
def caffe(
    path: Path = typer.Argument(..., help="DIGITS job folder or model archive (.tar.gz, .zip...), or a deploy "
                                          ".prototxt with its .caffemodel beside it."),
    name: str = typer.Option(..., "--name", "-n", help="The model's name in the store."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class names, one a line, in output order "
                                                                 "(default: the model's labels.txt)."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Mean to subtract: a .binaryproto file, B,G,R numbers, "
                                                            "or 'none' (default: what train_val.prototxt says)."),
    scale: Optional[float] = typer.Option(None, "--scale", help="Factor after the mean (default: train_val's "
                                                                "transform_param.scale, else 1)."),
    input_size: Optional[str] = typer.Option(None, "--input-size", help="WxH of the network input (one number: "
                                                                        "a square), when the prototxt does not say it."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Import a Caffe / DIGITS image classifier: a model in the store with its bundle (ONNX, safetensors)."""
    from shoal.importers.caffe import import_caffe

    with err.status(f"Importing {path} …"):
        done = import_caffe(path, name=name, labels=labels, mean=mean, scale=scale, input_size=_size(input_size))
    if as_json:
        typer.echo(json.dumps({"name": done.name, "bundle": str(done.bundle), "labels": list(done.card.labels),
                               "input": done.card.input.to_dict(), "normalization": done.card.normalization.to_dict(),
                               "notes": done.notes, "onnx_max_abs_diff": done.onnx_diff}))
        return
    for note in done.notes:
        err.print(f"  {note}")
    spec = done.card.input
    typer.echo(f"Imported {done.name}: {len(done.card.labels)} classes, {spec.width}x{spec.height} "
               f"{'BGR' if spec.channels == 3 else 'grayscale'}, mean {done.card.normalization.mean}; "
               f"bundle {done.bundle}")
