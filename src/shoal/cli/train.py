"""``shoal train``, ``shoal model ...`` and ``shoal export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shoal.cli import ConfigCommand, app, config_option
from shoal.training.config import TrainConfig

err = Console(stderr=True)
out = Console()
model_app = typer.Typer(help="List, show and delete trained models.", no_args_is_help=True)
app.add_typer(model_app, name="model")

TRAIN_EXAMPLES = """
Examples:

  shoal train --dataset dolphins --pretrained            # fine-tune EfficientNet-Lite0 (ImageNet)

  shoal train --dataset digits --network lenet --epochs 10

  shoal train --dataset dolphins --network alexnet --lr 0.01 --lr-policy step --name dolphins-alexnet

  shoal train --dataset digits --network lenet --lr find   # the rate lr-find suggests (the training loop only)

  shoal train --dataset digits --network lenet --nproc 2   # data-parallel: 2 processes (one per GPU on CUDA)
"""


@app.command(epilog=TRAIN_EXAMPLES, cls=ConfigCommand)
def train(
    ctx: typer.Context,
    dataset: Optional[str] = config_option(TrainConfig, "dataset", "--dataset", "-d"),
    network: Optional[str] = config_option(TrainConfig, "network", "--network", "-n"),
    pretrained: bool = typer.Option(False, "--pretrained", help="Start from the network's own ImageNet weights (fine-tuning)."),
    weights: Optional[str] = typer.Option(None, "--weights", metavar="FILE|BUNDLE|MODEL", help=(
        "Start from these weights (implies --pretrained): a .safetensors/.pth file, a bundle (folder or .shoal), "
        "or a model in the store, trained or imported; a bundle or model brings its own network and gets a new "
        "head sized to the dataset.")),
    name: Optional[str] = config_option(TrainConfig, "name", "--name"),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue this stopped or killed model from its last epoch."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="JSON file of options; flags override it."),
    epochs: Optional[int] = config_option(TrainConfig, "epochs", "--epochs"),
    batch_size: Optional[int] = config_option(TrainConfig, "batch_size", "--batch-size"),
    solver: Optional[str] = config_option(TrainConfig, "solver", "--solver"),
    lr: Optional[str] = config_option(TrainConfig, "lr", "--lr", metavar="FLOAT|find"),
    lr_policy: Optional[str] = config_option(TrainConfig, "lr_policy", "--lr-policy"),
    step_size: Optional[float] = config_option(TrainConfig, "step_size", "--step-size"),
    step_values: Optional[str] = config_option(TrainConfig, "step_values", "--step-values"),
    gamma: Optional[float] = config_option(TrainConfig, "gamma", "--gamma"),
    power: Optional[float] = config_option(TrainConfig, "power", "--power"),
    weight_decay: Optional[float] = config_option(TrainConfig, "weight_decay", "--weight-decay"),
    momentum: Optional[float] = config_option(TrainConfig, "momentum", "--momentum"),
    freeze: Optional[str] = config_option(TrainConfig, "freeze", "--freeze"),
    head: Optional[str] = config_option(TrainConfig, "head", "--head"),
    crop: Optional[int] = config_option(TrainConfig, "crop", "--crop"),
    flip: Optional[bool] = config_option(TrainConfig, "flip", "--flip/--no-flip"),
    color_jitter: Optional[float] = config_option(TrainConfig, "color_jitter", "--color-jitter"),
    label_smoothing: Optional[float] = config_option(TrainConfig, "label_smoothing", "--label-smoothing"),
    mean: Optional[str] = config_option(TrainConfig, "mean", "--mean"),
    seed: Optional[int] = config_option(TrainConfig, "seed", "--seed"),
    snapshot_every: Optional[int] = config_option(TrainConfig, "snapshot_every", "--snapshot-every"),
    val_every: Optional[int] = config_option(TrainConfig, "val_every", "--val-every"),
    early_stop: Optional[int] = config_option(TrainConfig, "early_stop", "--early-stop"),
    device: Optional[str] = config_option(TrainConfig, "device", "--device"),
    threads: Optional[int] = config_option(TrainConfig, "threads", "--threads"),
    precision: Optional[str] = config_option(TrainConfig, "precision", "--precision"),
    log_every: Optional[int] = config_option(TrainConfig, "log_every", "--log-every"),
    sync_bn: Optional[bool] = config_option(TrainConfig, "sync_bn", "--sync-bn/--no-sync-bn"),
    nproc: int = typer.Option(1, "--nproc", min=1, max=1024, help=(
        "Train data-parallel in this many processes on this machine (torch.distributed): one per GPU on CUDA, "
        "gloo processes on CPU. --batch-size stays the global batch. On several machines use torchrun "
        "(README, 'Scaling out').")),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files into the model's folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Train a model on a stored dataset, from scratch or fine-tuned, and write its bundle."""
    from shoal.extras import require

    require("train", "shoal train")
    from shoal.config import build
    from shoal.errors import ConfigError
    from shoal.training import distributed
    from shoal.training import resume as resume_run
    from shoal.training import train as train_run

    here = distributed.world()
    if weights is not None and not resume:  # a bundle or a model brings its network: --weights NAME fine-tunes it
        from shoal.training.start import resolve_start

        network, weights = resolve_start(network, weights)
    # the options the flags give TrainConfig (None: not given; the --config file or the default decides)
    options: dict[str, Any] = dict(
        dataset=dataset, network=network, pretrained=str(weights) if weights else (True if pretrained else None),
        name=name, epochs=epochs, batch_size=batch_size, solver=solver, lr=None, lr_policy=lr_policy,
        step_size=step_size, step_values=step_values, gamma=gamma, power=power, weight_decay=weight_decay,
        momentum=momentum, freeze=freeze, head=head, crop=crop, flip=flip, color_jitter=color_jitter,
        label_smoothing=label_smoothing, mean=mean, seed=seed, snapshot_every=snapshot_every, val_every=val_every,
        early_stop=early_stop, device=device, threads=threads, precision=precision, log_every=log_every,
        sync_bn=sync_bn)
    lr_value = _learning_rate(lr)
    if lr == "find":
        if resume:
            raise ConfigError("--lr find chooses the rate of a new training; a resumed one keeps its own: drop --lr")
        if dataset is None and config_file is None:
            raise ConfigError("--dataset is required: name a stored dataset (see 'shoal dataset list')")
        lr_value = _find_lr(build(TrainConfig, config_file, **{k: options[k] for k in _LR_FIND_OPTIONS}))
        ctx.params["lr"] = f"{lr_value:g}"  # what the processes of a data-parallel run are given
    options["lr"] = lr_value
    if nproc > 1:
        if here.size > 1:
            raise ConfigError(f"--nproc starts the processes itself, but this one is already rank {here.rank} of "
                              f"{here.size} (started by torchrun): drop --nproc, torchrun's --nproc-per-node says how many")
        needs_dataset = not resume and dataset is None and config_file is None
        _launch(nproc, _child_args(ctx), resume=resume, epochs=epochs,
                build_config=None if needs_dataset else lambda: build(TrainConfig, config_file, **options))
        return

    handler = _Progress(tensorboard=tensorboard)
    try:
        if resume:
            with _device_lane("resume", resume, _stored_device(resume), here=here) as held:
                result = resume_run(resume, on_event=handler, epochs=epochs)
                held.status = "aborted" if result.status == "aborted" else "done"
        else:
            if dataset is None and config_file is None:
                raise ConfigError("--dataset is required: name a stored dataset (see 'shoal dataset list')")
            config = build(TrainConfig, config_file, **options)
            with _device_lane("train", config.resolved().name or "", config.device, here=here) as held:
                result = train_run(config, on_event=handler)
                held.status = "aborted" if result.status == "aborted" else "done"
    except KeyboardInterrupt:
        handler.close()
        err.print(f"Interrupted: the last finished epoch is saved. Resume with: shoal train --resume {handler.name}",
                  soft_wrap=True, highlight=False)
        raise typer.Exit(130)
    finally:
        handler.close()
    if not here.main:  # rank 0 of a data-parallel run reports for all
        return
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    elif result.status == "aborted":
        err.print(f"Aborted. Kept snapshots are in {result.folder}")
    else:
        best = next((h for h in result.history if h["epoch"] == result.best_epoch), None)
        acc = f"{best['val_accuracy']:.1%}" if best else "n/a"
        typer.echo(f"Model {result.name}: best epoch {result.best_epoch}, validation accuracy {acc}")
        typer.echo(f"Bundle: {result.bundle}")


# What the range test of --lr find is given: what shapes the model and its first steps, not the schedule.
_LR_FIND_OPTIONS = ("dataset", "network", "pretrained", "batch_size", "solver", "weight_decay", "momentum", "freeze",
                    "head", "crop", "flip", "color_jitter", "label_smoothing", "mean", "seed", "device", "threads",
                    "precision")


def _learning_rate(text: str | None) -> float | None:
    """``--lr``: a number, or ``find`` (``None`` here: :func:`_find_lr` supplies it)."""
    from shoal.errors import ConfigError

    if text is None or text == "find":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--lr must be a number > 0 or 'find' (the range test's suggestion), got {text!r}") from None


def _find_lr(config: TrainConfig) -> float:
    """``--lr find``: run the range test for this training and say what it suggests (the curve is saved
    where ``shoal lr-find`` saves it)."""
    from shoal.training.lr_find import default_folder, with_found_lr

    with err.status("Finding the learning rate …") as status:
        found, finding = with_found_lr(config, on_event=lambda e: status.update(
            f"Finding the learning rate: {e['done']}/{e['total']}, {e['lr']:.2g} …"))
    _, image = finding.save(default_folder(found))
    err.print(f"lr-find suggests {found.lr:g} (valley; steepest descent {finding.steep:.2g}); curve: {image}",
              highlight=False, soft_wrap=True)
    return float(found.lr or 0)


def _launch(nproc: int, args: list[str], *, resume: str | None, epochs: int | None, build_config: Any) -> None:
    """``shoal train ... --nproc N``: check the run here, then start N copies of this command (without
    ``--nproc``) through torch.distributed's launcher; the copies' rank 0 prints the progress and result."""
    from shoal.errors import ConfigError
    from shoal.store import Store
    from shoal.training import check_resume, distributed

    if resume:
        config = check_resume(resume, epochs=epochs)
    else:
        if build_config is None:
            raise ConfigError("--dataset is required: name a stored dataset (see 'shoal dataset list')")
        config = build_config().resolved()
    distributed.check_processes(config, nproc)
    name = resume or config.name
    store = Store()
    if not resume and store.exists("model", name):
        raise ConfigError(f"a model named {name!r} exists: resume it (--resume {name}), delete it ('shoal model "
                          f"delete {name}'), or choose another --name", options=("name",))
    with _device_lane("resume" if resume else "train", name or "", config.device, nproc=nproc,
                      here=distributed.world(), store=store) as held:
        err.print(f"Starting {nproc} training processes (torch.distributed, "
                  f"{'nccl' if config.device != 'cpu' and distributed.gpus() else 'gloo'}) …", highlight=False)
        try:
            held.status = distributed.train_processes(args, nproc=nproc, name=name, store=store)
        except KeyboardInterrupt:
            held.status = "interrupted"
            err.print(f"Interrupted: the last finished epoch is saved. Resume with: shoal train --resume {name} "
                      f"--nproc {nproc}", soft_wrap=True, highlight=False)
            raise typer.Exit(130) from None
        except distributed.RankLost:
            held.status = "interrupted"
            raise


def _device_lane(kind: str, name: str, device: str, *, here: Any, nproc: int = 1, store: Any = None) -> Any:
    """Hold the device's lane in the store while this command trains, as the web app's jobs do (it shows
    the run, and starts no job there meanwhile); say on stderr while waiting for it. A process of a
    data-parallel run holds nothing: the command that started the processes holds the lane for them."""
    import contextlib

    from shoal import lanes

    if here.size > 1:
        return contextlib.nullcontext(lanes.Held(None))
    return lanes.hold(kind, name, device=device, nproc=nproc, store=store,
                      on_wait=lambda ahead, what: err.print(lanes.describe_wait(ahead, what), soft_wrap=True,
                                                            highlight=False))


def _stored_device(name: str) -> str:
    """The device a stored model trains on (its resolved configuration's)."""
    from shoal.models import ModelFolder

    return str(ModelFolder.of(name).read_config().get("device", "auto"))


def _child_args(ctx: Any) -> list[str]:
    """This command line as given, less ``--nproc``: what each process of a data-parallel run runs."""
    args = [ctx.info_name or "train"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name == "nproc" or getattr(source, "name", None) not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            if value:
                args.append(param.opts[0])
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
        else:
            args += [param.opts[0], str(value)]
    return args


class _Progress:
    """Turns training events into a progress bar and one line per epoch, on stderr."""

    def __init__(self, *, tensorboard: bool) -> None:
        self.bar: Progress | None = None
        self.task: Any = None
        self.epochs = 0
        self.name = ""
        self.writer: Any = None
        self.tensorboard = tensorboard

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "prepare":
            self.close_bar()
            err.print(_sentence(event["message"]) + " …", highlight=False)
        elif kind == "start":
            self.close_bar()
            self.name, self.epochs = event["name"], event["epochs"]
            if self.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                from shoal.store import Store

                self.writer = SummaryWriter(str(Store().folder("model", self.name) / "tensorboard"))
            if event.get("head") == "fit":
                err.print(f"Fitting the head of {self.name} on the features of {event['train_images']} images "
                          f"({event['val_images']} for validation)", highlight=False)
                self._bar("features", event["train_images"] + event["val_images"], 0)
                return
            if event["resumed"]:
                err.print(f"Resuming {self.name} after epoch {event['epoch']} of {self.epochs}", highlight=False)
            how = "on cached backbone features" if event["cached_features"] else (
                "end to end, bf16 autocast" if event["bf16"] else "end to end")
            err.print(f"Training {self.name} on {event['train_images']} images ({event['val_images']} for validation), "
                      f"{how}, on {event['device']}"
                      + (f", {event['world_size']} data-parallel processes" if event.get("world_size", 1) > 1 else ""))
            self._bar("epoch {task.fields[epoch]}", self.epochs, event["epoch"])
        elif kind == "features":
            if self.bar is None:  # the loop's frozen-backbone features come before its start event
                self._bar("features", event["total"], 0)
            if self.bar is not None:
                self.bar.update(self.task, total=event["total"], completed=event["done"],
                                description=f"{event['done']}/{event['total']} images")
        elif kind == "cross_validation":
            if event["done"] == 0:
                self.close_bar()
                self._bar("choosing the head's strength", event["total"], 0)
            if self.bar is not None:
                self.bar.update(self.task, completed=event["done"],
                                description=f"cross-validation fold {event['done']}/{event['total']}")
        elif kind == "fit":
            self.close_bar()
            if event["folds"]:
                best = min(event["curve"], key=lambda point: point["log_loss"])
                err.print(f"head: logistic regression, C={event['strength']:.3g} chosen by {event['folds']}-fold "
                          f"cross-validated log-loss on the training images ({best['log_loss']:.4f})", highlight=False)
            else:
                err.print(f"head: logistic regression, C={event['strength']:.3g} (too few images per class "
                          "to cross-validate)", highlight=False)
        elif kind == "iteration" and self.bar is not None:
            self.bar.update(self.task, completed=event["epoch"], epoch=f"{event['epoch']:.2f}/{self.epochs}",
                            description=f"loss {event['train_loss']:.4f}  {event['images_per_s']:.0f} img/s")
            self._scalars(event, ("train_loss", "lr"), event["epoch"])
        elif kind == "epoch" and "lr" not in event:  # a fitted head: one result, no learning rate
            unfamiliar = event.get("val_unfamiliar")
            err.print(f"validation: loss {event['val_loss']:.4f}  acc {event['val_accuracy']:.1%}"
                      + (f"  top-5 {event['val_top5']:.1%}" if "val_top5" in event else "")
                      + (f"  unfamiliar {unfamiliar:.1%}" if unfamiliar is not None else "")
                      + f"  {event['elapsed_s']:.1f} s", soft_wrap=True, highlight=False)
        elif kind == "epoch":
            line = f"epoch {event['epoch']:>3}/{self.epochs}  loss {event['train_loss']:.4f}"
            if "val_accuracy" in event:
                line += f"  val loss {event['val_loss']:.4f}  acc {event['val_accuracy']:.1%}"
                if "val_top5" in event:
                    line += f"  top-5 {event['val_top5']:.1%}"
            line += f"  lr {event['lr']:.2g}  {event['images_per_s']:.0f} img/s  {event['elapsed_s']:.1f} s"
            err.print(line, soft_wrap=True, highlight=False)
            self._scalars(event, ("val_loss", "val_accuracy", "val_top5"), event["epoch"])
        elif kind == "export":
            self.close_bar()
            err.print(_sentence(event["message"]) + " …", highlight=False)
        elif kind == "early_stop":
            err.print(f"Stopping early: no improvement since epoch {event['best_epoch']}")

    def _bar(self, label: str, total: int, completed: int) -> None:
        if not err.is_terminal:  # a log gets the lines, not a bar's frames
            return
        self.bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), console=err, transient=True)
        self.bar.start()
        self.task = self.bar.add_task("", total=total, completed=completed, epoch=completed)

    def _scalars(self, event: dict[str, Any], keys: tuple[str, ...], step: float) -> None:
        if self.writer is not None:
            for key in keys:
                if key in event:
                    self.writer.add_scalar(key, event[key], int(step * 1000))

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def close(self) -> None:
        self.close_bar()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _sentence(message: str) -> str:
    """``message`` with its first letter capitalised and the rest as written (``ONNX`` stays)."""
    return message[:1].upper() + message[1:]


@model_app.command("list")
def model_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List trained models.

    Example: shoal model list --json
    """
    from shoal import models

    rows = [(s.status, s.entry) for s in models.statuses() if s.entry is not None]  # stored models only
    if as_json:
        typer.echo(json.dumps([{**entry.to_dict(), "status": status} for status, entry in rows]))
        return
    table = Table()
    for column in ("name", "status", "dataset", "network", "val acc"):
        table.add_column(column, overflow="fold")
    for status, e in rows:
        acc = e.summary.get("val_accuracy")
        table.add_row(e.name, status, str(e.summary.get("dataset", "")), str(e.summary.get("network", "")),
                      f"{acc:.1%}" if isinstance(acc, (int, float)) else "")
    out.print(table)
    for _, e in rows:
        if e.summary.get("bundle"):
            out.print(f"{e.name}: {e.summary['bundle']}", soft_wrap=True, highlight=False)


@model_app.command("show")
def model_show(name: str = typer.Argument(..., help="Model name."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show a model's status, configuration and metric history.

    Example: shoal model show digits-lenet
    """
    from shoal.models import describe

    info = describe(name)
    if as_json:
        typer.echo(json.dumps(info))
        return
    out.print(f"[bold]{info['name']}[/]  {info['status']}  ({info['path']})")
    fitted = info["config"].get("head") == "fit"
    keys = ("dataset", "network", "pretrained", "freeze", "head") if fitted else (
        "dataset", "network", "pretrained", "epochs", "solver", "lr", "lr_policy", "freeze")
    for key in keys:
        out.print(f"  {key:<11} {info['config'].get(key)}")
    if info["summary"].get("world_size", 1) > 1:
        out.print(f"  {'processes':<11} {info['summary']['world_size']} (data-parallel)")
    if fitted:  # one result, no epochs: what the fit chose, and how it scored on validation
        fit = info.get("fit")
        if fit:
            out.print(f"  {'fit':<11} logistic regression, C={fit['strength']:.3g} "
                      f"({fit['folds']}-fold cross-validated log-loss)" if fit["folds"] else
                      f"  {'fit':<11} logistic regression, C={fit['strength']:.3g} (not cross-validated)")
        for h in info["history"]:
            out.print(f"  {'validation':<11} accuracy {h['val_accuracy']:.1%}, log-loss {h['val_loss']:.4f}"
                      + (f", unfamiliar {h['val_unfamiliar']:.1%}" if h.get("val_unfamiliar") is not None else ""))
    else:
        table = Table("epoch", "train loss", "val loss", "val acc", "lr", "elapsed s")
        for h in info["history"]:
            table.add_row(str(h["epoch"]), f"{h['train_loss']:.4f}", f"{h['val_loss']:.4f}",
                          f"{h['val_accuracy']:.1%}", f"{h['lr']:.2g}", f"{h['elapsed_s']:.1f}")
        out.print(table)
    if info.get("bundle"):
        out.print(f"Bundle: {info['bundle']}")


@model_app.command("delete")
def model_delete(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Delete a model and its files.

    Example: shoal model delete digits-lenet
    """
    from shoal import models

    models.delete(name)  # refuses a model that is queued or training (here, or in the web app)
    typer.echo(f"Deleted model {name}")


@app.command("export")
def export(
    name: str = typer.Argument(..., help="Model name."),
    epoch: str = typer.Option("best", "--epoch", help="best, last, or an epoch with a kept snapshot."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Bundle folder, or a file ending in .shoal; with "
                                  "--format triton, the Triton model repository (the model goes into DIR/NAME)."),
    fmt: str = typer.Option("bundle", "--format", help="bundle (shoal's own), or triton (an NVIDIA Triton model: "
                            "config.pbtxt and 1/model.onnx)."),
) -> None:
    """Write a model's bundle (weights, ONNX graph, labels, manifest), or a Triton model of it.

    Examples:
      shoal export dolphins-efficientnet_lite0 --out dolphins.shoal
      shoal export dolphins-efficientnet_lite0 --format triton --out triton-models/
    """
    from shoal.config import check_choice, whole_number

    check_choice("format", fmt, ("bundle", "triton"))
    number = whole_number(epoch)
    at = epoch if number is None else number
    with err.status(f"Writing the {'Triton model' if fmt == 'triton' else 'bundle'} of {name}, epoch {epoch} …"):
        if fmt == "triton":
            from shoal.bundle.triton import export_triton

            path = export_triton(name, epoch=at, out=out_path)
        else:
            from shoal.bundle import export as export_bundle

            path = export_bundle(name, epoch=at, out=out_path)
    typer.echo(str(path))


@app.command("networks")
def networks_list(
    pattern: Optional[str] = typer.Argument(None, help="Only names matching this pattern, e.g. 'efficientnet*'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the built-in networks, their input size and where their pretrained weights come from.

    Any timm model name works too (e.g. --network resnet18), as does your own .py file.

    Example: shoal networks 'efficientnet*'
    """
    from dataclasses import asdict

    from shoal.extras import require

    require("train", "shoal networks")
    from shoal.networks import list_networks

    specs = list_networks(pattern)
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in specs]))
        return
    # No box and the short columns kept whole, so the description gets the rest of an 80-column terminal.
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("weights", no_wrap=True)
    table.add_column("description", overflow="fold", ratio=1)
    for s in specs:
        weights = "none" if s.pretrained is None else (f"{s.pretrained}, offline" if s.pretrained_offline else s.pretrained)
        table.add_row(s.name, f"{s.input_size[1]}x{s.input_size[0]}", weights, s.description)
    out.print(table)
