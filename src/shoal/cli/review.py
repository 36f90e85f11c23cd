"""``shoal review``: the training and validation images whose label is probably wrong, ambiguous, duplicated or odd."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from shoal.cli import app

err = Console(stderr=True, highlight=False, soft_wrap=True)

REVIEW_EXAMPLES = """
Examples:

  shoal review dolphins-efficientnet_lite0                     # the 50 most suspicious images

  shoal review dolphins-efficientnet_lite0 --json > review.json  # edit the actions, then:

  shoal dataset edit dolphins --from-review review.json         # makes dolphins@2
"""


@app.command(epilog=REVIEW_EXAMPLES)
def review(
    model: str = typer.Argument(..., help="The name of a trained model (its dataset must be in the store)."),
    top: int = typer.Option(50, "--top", min=1, help="Show at most this many images, most suspicious first."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object ('shoal dataset edit --from-review' reads it)."),
) -> None:
    """Rank the images whose given label is probably wrong, or which are ambiguous, duplicates or outliers.

    Labels are judged on out-of-fold probabilities (each image predicted by a head that never saw it)
    with cleanlab's confident learning; needs the [review] extra (cleanlab, AGPL-3.0).
    Changes are proposed for training images only; validation images are listed to look at.
    """
    from shoal.extras import require
    from shoal.review import review as run

    require("review", "shoal review")
    with err.status(f"Reviewing the images of {model} …") as status:
        result = run(model, top=top, on_progress=lambda message: status.update(message + " …"))
    typer.echo(json.dumps(result.to_dict()) if as_json else result.summary())
