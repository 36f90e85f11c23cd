"""``shoal classify``: the top classes of images, folders, URLs or video frames.

Kept light: it imports the inference stack (NumPy, Pillow, ONNX Runtime) and nothing of
torch, so a cold ``shoal classify`` of one image starts and ends in well under a second.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from shoal.cli import app

if TYPE_CHECKING:
    from shoal.inference import Classifier, Result

CLASSIFY_EXAMPLES = """
Examples:

  shoal classify dolphins.shoal photo.jpg                  # one line: photo.jpg  dolphin 99.97%  seahorse 0.03%

  shoal classify dolphins-efficientnet_lite0 photos/ https://example.com/fish.jpg --top 1 --json

  shoal classify dolphins.shoal --video clip.mp4 --every 30  # every 30th frame; --video 0 is the first camera

  shoal classify dolphins.shoal photo.jpg --heatmap where.png --layers layers.html
"""


@app.command(epilog=CLASSIFY_EXAMPLES)
def classify(
    model: str = typer.Argument(..., help="Bundle folder, .shoal file, or the name of a trained model."),
    inputs: Optional[list[str]] = typer.Argument(None, help="Image files, folders (every image inside) or http(s) URLs.",
                                                 show_default=False),
    top: int = typer.Option(5, "--top", "-n", min=1, help="Classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list of {source, predictions} (JSON Lines with --video)."),
    video: Optional[str] = typer.Option(None, "--video", help="Classify the frames of this video file, or camera index (0)."),
    every: int = typer.Option(1, "--every", min=1, help="With --video: classify every N-th frame."),
    runtime: str = typer.Option("onnx", "--runtime", help="onnx (fast, no torch) or torch (GPUs)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: all cores)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per run of the network."),
    heatmap: Optional[Path] = typer.Option(None, "--heatmap", help="Write a Grad-CAM overlay of the top class to this PNG "
                                           "(one image; needs shoal[train])."),
    target: Optional[str] = typer.Option(None, "--class", help="With --heatmap: explain this class instead of the top one."),
    layers: Optional[Path] = typer.Option(None, "--layers", help="Write every layer's statistics and activations to this "
                                          "HTML file (one image; needs shoal[train])."),
    trust_code: bool = typer.Option(False, "--trust-code",
                                    help="Allow --runtime torch, --heatmap and --layers to run the Python file a "
                                         "bundle names as its network (only for bundles you trust; ONNX needs no code)."),
) -> None:
    """Classify images with a trained model: the top classes and their probabilities, one line per image.

    Exit code 1 when any input could not be read (each gets an error line; the others still run).
    """
    from shoal.errors import ConfigError
    from shoal.inference import load
    from shoal.trust import check_bundle_code

    if video is None and not inputs:
        raise ConfigError("give at least one image, folder or URL to classify (or --video FILE|CAMERA)")
    if video is not None and inputs:
        raise ConfigError(f"--video classifies one video; classify the images ({inputs[0]!r}...) in a separate command")
    if (heatmap is not None or layers is not None) and (video is not None or len(inputs or []) != 1):
        raise ConfigError("--heatmap and --layers explain one image: give exactly one image (no folder, list or --video)")
    if target is not None and heatmap is None:
        raise ConfigError("--class chooses the class a heat-map explains; add --heatmap out.png")
    classifier = load(model, runtime=runtime, threads=threads, device=device, trust_code=trust_code)
    if heatmap is not None or layers is not None:  # refuse before classifying, not after
        check_bundle_code(classifier.manifest, str(classifier.path), trust_code=trust_code)
    if video is not None:
        results = classifier.predict_video(video, top, every=every)
        failed = _emit(results, as_json=as_json, json_lines=True)
    else:
        failed = _emit(classifier.predict_iter(list(inputs or []), top, batch_size=batch_size), as_json=as_json)
    if not failed and (heatmap is not None or layers is not None):
        _explain(classifier, (inputs or [])[0], heatmap, layers, target)
    if failed:
        raise typer.Exit(1)


def _explain(classifier: Classifier, image: str, heatmap: Path | None, layers: Path | None, target: str | None) -> None:
    """Write the heat-map and/or the layer report of one image; say where on stderr."""
    if heatmap is not None:
        found = classifier.heatmap(image, int(target) if target is not None and target.isdigit() and
                                   target not in classifier.labels else target)
        found.save(heatmap)
        sys.stderr.write(f"Heat-map of {found.label} ({found.probability:.2%}): {heatmap}\n")
    if layers is not None:
        from shoal.inference.explain import write_layers_html

        report = classifier.layers(image)
        write_layers_html(report, layers)
        sys.stderr.write(f"Layers ({len(report.layers)}, {report.total_parameters:,} parameters): {layers}\n")


def _emit(results: Iterable[Result], *, as_json: bool, json_lines: bool = False) -> int:
    """Print results as they come; return how many failed."""
    failed = 0
    collected: list[dict[str, object]] = []
    noted = False
    for result in results:
        failed += not result.ok
        if result.unfamiliar_reason and not noted and not as_json:
            sys.stderr.write(f"No unfamiliar verdict: {result.unfamiliar_reason.removeprefix('the model cannot tell: ')}\n")
            noted = True
        if as_json and json_lines:
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
            sys.stdout.flush()
        elif as_json:
            collected.append(result.to_dict())
        elif result.ok:
            sys.stdout.write(format_line(result) + "\n")
            sys.stdout.flush()
        else:
            sys.stderr.write(f"Error: {result.error}\n")
    if as_json and not json_lines:
        sys.stdout.write(json.dumps(collected) + "\n")
    return failed


def format_line(result: Result) -> str:
    """``photo.jpg  dolphin 99.97%  seahorse 0.03%`` (video frames: ``clip.mp4 frame 30 (1.00 s)  ...``).

    An image unlike every training image ends with ``UNFAMILIAR``: its probabilities say little.
    """
    name = result.source
    if result.frame is not None:
        name += f" frame {result.frame}" + (f" ({result.time_s:.2f} s)" if result.time_s is not None else "")
    parts = [name, *(f"{label} {_percent(p)}" for label, p in result.predictions)]
    if result.unfamiliar:
        parts.append("UNFAMILIAR (like none of the training images)")
    return "  ".join(parts)


def _percent(p: float) -> str:
    """``99.97%``; anything that would print as 0.00% (a true zero too) is ``<0.01%``, one form for all.

    >>> _percent(0.9997), _percent(0.00004), _percent(0.0)
    ('99.97%', '<0.01%', '<0.01%')
    """
    return "<0.01%" if p * 100 < 0.005 else f"{p * 100:.2f}%"
