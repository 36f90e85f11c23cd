"""``shoal dataset``: create, show, list, delete and explore stored datasets.

Every command parses its options, calls one function of :mod:`shoal.datasets` and
formats the result: tables and paths on stdout, the progress bar on stderr. The library
is imported inside the commands so that ``shoal --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from shoal.cli import ConfigCommand, app, config_option
from shoal.data.config import DataConfig

if TYPE_CHECKING:
    from rich.console import Console

    from shoal.data.dataset import Dataset

dataset_app = typer.Typer(
    help="Turn a folder of labelled images into a stored dataset, and look at it.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(dataset_app, name="dataset")

_SKIPPED_SHOWN = 20  # longer skip reports are cut short; --json or 'show --json' has them all

CREATE_EXAMPLES = """
Examples:

  shoal dataset create ../shared/data/dolphins-and-seahorses --name dolphins-and-seahorses

  shoal dataset create photos/ --name pets --size 224 --resize crop --val 20 --test 10 --seed 7

  shoal dataset create --list train.txt --val-folder photos-val/ --name pets-listed --grayscale --json
"""

SHOW_EXAMPLES = """
Examples:

  shoal dataset show dolphins-and-seahorses

  shoal dataset show digits --json
"""

LIST_EXAMPLES = """
Examples:

  shoal dataset list

  shoal dataset list --json
"""

DELETE_EXAMPLES = """
Examples:

  shoal dataset delete pets

  shoal dataset delete pets --force         # even though models were trained on it
"""

EXPLORE_EXAMPLES = """
Examples:

  shoal dataset explore dolphins-and-seahorses --out sheet.png

  shoal dataset explore digits --out digits-val.png --split val --per-class 12
"""

SAMPLE_EXAMPLES = """
Examples:

  shoal dataset sample                      # builds 'digits': 1,797 handwritten digits, 10 classes, 32x32

  shoal dataset sample --name digits-64 --size 64 --json
"""


@dataset_app.command("create", epilog=CREATE_EXAMPLES, cls=ConfigCommand)
def create_command(
    folder: Optional[Path] = typer.Argument(
        None, help="Folder with one sub-folder of images per class (optional with --list).", show_default=False
    ),
    name: str = typer.Option(..., "--name", "-n", help="Name of the dataset in the store (letters, digits, . _ -)."),
    size: Optional[str] = config_option(DataConfig, "size", "--size", "-s"),
    resize_mode: Optional[str] = config_option(DataConfig, "resize_mode", "--resize"),
    grayscale: bool = typer.Option(False, "--grayscale", help="Store one channel instead of RGB."),
    val_pct: Optional[float] = config_option(DataConfig, "val_pct", "--val"),
    test_pct: Optional[float] = config_option(DataConfig, "test_pct", "--test"),
    val_folder: Optional[Path] = config_option(DataConfig, "val_folder", "--val-folder"),
    list_file: Optional[Path] = config_option(DataConfig, "list_file", "--list"),
    seed: Optional[int] = config_option(DataConfig, "seed", "--seed"),
    workers: Optional[int] = config_option(DataConfig, "workers", "--workers"),
    min_per_class: Optional[int] = config_option(DataConfig, "min_per_class", "--min-per-class"),
    max_per_class: Optional[int] = config_option(DataConfig, "max_per_class", "--max-per-class"),
    as_json: bool = typer.Option(False, "--json", help="Print the dataset as one JSON object (as 'show --json')."),
) -> None:
    """Create a dataset from a folder of class sub-folders (or a list file): resize, split, store.

    Files that cannot be used are skipped and listed with the reason; they never stop the build.
    """
    from shoal import datasets
    from shoal.errors import ConfigError

    if folder is None and list_file is None:
        raise ConfigError("give a FOLDER with one sub-folder of images per class, or --list FILE of 'path label' lines")
    if val_folder is not None and val_pct is not None:
        raise ConfigError(
            f"--val {val_pct:g} does not apply with --val-folder: the validation images are the ones in "
            f"'{val_folder}'; drop --val (or drop --val-folder to hold out a share of each class)"
        )
    started = time.perf_counter()
    with _Progress("decoding") as progress:
        ds = datasets.create(
            folder,
            name,
            progress=progress,
            size=size,
            resize_mode=resize_mode,
            grayscale=True if grayscale else None,
            val_pct=val_pct,
            test_pct=test_pct,
            val_folder=val_folder,
            list_file=list_file,
            seed=seed,
            workers=workers,
            min_per_class=min_per_class,
            max_per_class=max_per_class,
        )
    _print_dataset(ds, as_json=as_json, seconds=time.perf_counter() - started)


@dataset_app.command("show", epilog=SHOW_EXAMPLES)
def show_command(
    name: str = typer.Argument(..., help="Name of a stored dataset."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: name, classes, size, splits, skipped, mean_image..."),
) -> None:
    """Show a dataset: classes × splits counts, skipped files and where it is stored."""
    from shoal import datasets
    from shoal.data.versions import version_info, versions

    ds = datasets.load(name)
    _print_dataset(ds, as_json=as_json)
    if not as_json:
        _print_versions(ds, versions(name), version_info(ds))


EDIT_EXAMPLES = """
Examples:

  shoal dataset edit birds --relabel /photos/cat/17.jpg=dog --exclude /photos/cat/blurry.jpg

  shoal review birds-efficientnet_lite0 --json > review.json && shoal dataset edit birds --from-review review.json
"""


@dataset_app.command("edit", epilog=EDIT_EXAMPLES)
def edit_command(
    name: str = typer.Argument(..., help="The dataset (or one of its versions) to start from."),
    relabel: Optional[list[str]] = typer.Option(None, "--relabel", help="PATH=CLASS: give an image another class (repeat)."),
    exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="PATH: leave an image out (repeat)."),
    from_review: Optional[Path] = typer.Option(None, "--from-review", help="A saved 'shoal review --json': apply each row's action."),
    as_json: bool = typer.Option(False, "--json", help="Print the new version as one JSON object (as 'show --json')."),
) -> None:
    """Store a new version of a dataset (NAME@2, @3, ...) with images relabelled or left out.

    The source folder is not touched, and every image that stays keeps its split.
    """
    from shoal.data.versions import changes_from_review, edit, version_info
    from shoal.errors import ConfigError

    changes: dict[str, str] = {}
    for item in relabel or []:
        path, sep, cls = item.rpartition("=")
        if not sep or not path or not cls:
            raise ConfigError(f"--relabel takes PATH=CLASS, got {item!r}")
        changes[path] = cls
    dropped = list(exclude or [])
    if from_review is not None:
        more, less = changes_from_review(from_review)
        changes.update(more)
        dropped += less
    ds = edit(name, relabel=changes, exclude=dropped)
    info = version_info(ds)
    if as_json:
        _echo_json({**ds.to_dict(), "version": info})
        return
    _console().print(f"Stored {ds.name!r} (version {info['number']} of {info['base']!r}, from {info['parent']!r}): "
                     f"{len(info['relabelled'])} relabelled, {len(info['excluded'])} excluded; "
                     f"train on it with 'shoal train --dataset {ds.name}'", markup=False, highlight=False)


def _print_versions(ds: Dataset, found: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """The dataset's versions, and what changed from its parent."""
    console = _console()
    if len(found) > 1:
        console.print("\nversions:", markup=False)
        for v in found:
            mark = "*" if v["name"] == ds.name else " "
            origin = f"from {v['parent']}: {v['relabelled']} relabelled, {v['excluded']} excluded" if v["parent"] else "built"
            console.print(f" {mark} {v['name']:<24} {origin}; train {v['counts']['train']}, val {v['counts']['val']}",
                          markup=False, highlight=False)
    for change in info.get("relabelled", [])[:_SKIPPED_SHOWN]:
        console.print(f"  relabelled ({change['split']}) {change['from']} -> {change['to']}: {change['image']}",
                      markup=False, highlight=False)
    for change in info.get("excluded", [])[:_SKIPPED_SHOWN]:
        console.print(f"  excluded ({change['split']}, {change['label']}): {change['image']}", markup=False, highlight=False)


@dataset_app.command("list", epilog=LIST_EXAMPLES)
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of the datasets (as 'show --json')."),
) -> None:
    """List the stored datasets."""
    from shoal import datasets
    from shoal.store import Store

    found = datasets.list()
    if as_json:
        _echo_json([d.to_dict() for d in found])
        return
    console = _console()
    if not found:
        console.print(f"No datasets yet in {Store().home}. Create one with 'shoal dataset create FOLDER --name NAME'.")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    table.add_column("name", overflow="fold")
    for column in ("classes", "train", "val", "test"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("size", no_wrap=True)
    table.add_column("skipped", justify="right", no_wrap=True)
    table.add_column("created (UTC)", overflow="fold")
    for d in found:
        table.add_row(
            d.name,
            str(d.num_classes),
            str(d.count("train")),
            str(d.count("val")),
            str(d.count("test")),
            f"{d.size[0]}x{d.size[1]}{'' if d.channels == 3 else ' gray'}",
            str(len(d.skipped)),
            d.created.replace("T", " ")[:16],
        )
    console.print(table)


@dataset_app.command("delete", epilog=DELETE_EXAMPLES)
def delete_command(
    name: str = typer.Argument(..., help="Name of the dataset to delete."),
    force: bool = typer.Option(False, "--force", help="Delete it even though models were trained on it."),
) -> None:
    """Delete a stored dataset and its files (the source images are not touched).

    A dataset that models were trained on is kept unless --force is given: without it those
    models can no longer be resumed, exported again or evaluated on it (their bundles keep working).
    """
    from shoal import datasets, models
    from shoal.errors import DatasetError
    from shoal.store import Store

    Store().get("dataset", name)  # an unknown name says so before anything else
    users = models.trained_on(name)
    if users and not force:
        listed = ", ".join(repr(u) for u in users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        raise DatasetError(
            f"{len(users)} model{'s were' if len(users) > 1 else ' was'} trained on dataset {name!r} ({listed}); "
            f"without it they cannot be resumed, exported again or evaluated on it (their bundles keep working). "
            f"Add --force to delete it anyway")
    datasets.delete(name)
    if users:
        _console(stderr=True).print(f"models trained on it, now without their dataset: {', '.join(users)}")
    typer.echo(f"Deleted dataset {name!r}.")


@dataset_app.command("explore", epilog=EXPLORE_EXAMPLES)
def explore_command(
    name: str = typer.Argument(..., help="Name of a stored dataset."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG file to write the contact sheet to."),
    per_class: int = typer.Option(8, "--per-class", min=1, help="Images shown per class."),
    split: str = typer.Option("train", "--split", help="Split to sample: train, val or test."),
) -> None:
    """Write a contact sheet PNG: one row of resized sample images per class, with its name and count."""
    from shoal import datasets

    typer.echo(str(datasets.explore(name, out, per_class=per_class, split=split)))


@dataset_app.command("sample", epilog=SAMPLE_EXAMPLES, cls=ConfigCommand)
def sample_command(
    name: str = typer.Option("digits", "--name", "-n", help="Name of the sample dataset in the store."),
    size: str = typer.Option("32", "--size", "-s", help="Stored size: one number or WxH."),
    grayscale: bool = typer.Option(False, "--grayscale", help="Store one channel instead of RGB."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Delete the stored sample first and build it again."),
    as_json: bool = typer.Option(False, "--json", help="Print the dataset as one JSON object."),
) -> None:
    """Build the built-in sample: scikit-learn's 1,797 handwritten digits (10 classes), no download needed.

    The digits are written as a folder of PNGs in the store, then built like any folder.
    A sample already built is shown as it is (use --rebuild to build it again).
    """
    from shoal import datasets
    from shoal.store import Store

    reused = not rebuild and Store().exists("dataset", name)
    started = time.perf_counter()
    with _Progress("decoding") as progress:
        ds = datasets.build_sample(
            name, size=size, grayscale=True if grayscale else None, rebuild=rebuild, progress=progress
        )
    if reused:
        _console(stderr=True).print(f"dataset '{name}' was already built; shown as it is (--rebuild builds it again)")
    _print_dataset(ds, as_json=as_json, seconds=None if reused else time.perf_counter() - started)


# -- output -------------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _echo_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _print_dataset(ds: Dataset, *, as_json: bool, seconds: float | None = None) -> None:
    """The dataset's report: a classes × splits table, skipped files, where it is stored."""
    if as_json:  # what 'create', 'show' and 'sample' print alike
        from shoal.data.versions import version_info, versions

        _echo_json({**ds.to_dict(), "version": version_info(ds), "versions": versions(ds.name)})
        return
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    splits = [s for s in ("train", "val", "test") if s != "test" or ds.count("test")]
    colour = "RGB" if ds.channels == 3 else "grayscale"
    table = Table(
        title=f"dataset '{escape(ds.name)}': {ds.num_classes} classes, {ds.count()} images, "
        f"{ds.size[0]}x{ds.size[1]} {colour}, {ds.resize_mode}",
        title_justify="left",
        box=None,
        pad_edge=False,
    )
    table.add_column("class")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for c in ds.classes:
        counts = [ds.splits[s].get(c, 0) for s in splits]
        table.add_row(escape(c), *map(str, counts), str(sum(counts)))
    table.add_row("[b]total[/b]", *(f"[b]{ds.count(s)}[/b]" for s in splits), f"[b]{ds.count()}[/b]")
    console.print(table)
    if ds.skipped:
        console.print(f"\nskipped {len(ds.skipped)}:")
        for item in ds.skipped[:_SKIPPED_SHOWN]:
            console.print(f"  {escape(item.path)}: {escape(item.reason)}")
        if len(ds.skipped) > _SKIPPED_SHOWN:
            console.print(f"  ... and {len(ds.skipped) - _SKIPPED_SHOWN} more: 'shoal dataset show {ds.name} --json' lists all")
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    console.print(f"\nstored{took} in {escape(str(ds.path))}")


class _Progress:
    """A rich progress bar on stderr, shown only when decoding takes longer than a moment.

    Used as ``with _Progress("decoding") as progress: create(..., progress=progress)``.
    It refreshes from the callback (no background thread), so decoding processes can
    be forked safely.
    """

    _DELAY_S = 0.4

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.perf_counter()
        self.bar: Any = None
        self.task: Any = None
        self.last = 0.0

    def __enter__(self) -> _Progress:
        return self

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.bar is None:
            if now - self.started < self._DELAY_S or done >= total or not sys.stderr.isatty():
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=_console(stderr=True),
                auto_refresh=False,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done, total=total)
        if now - self.last > 0.1 or done >= total:
            self.bar.refresh()
            self.last = now

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
