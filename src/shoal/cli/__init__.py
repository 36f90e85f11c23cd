"""The ``shoal`` command: a thin front end over the library.

Each sub-module registers the commands of one stage; every command parses its
options, calls one library function and formats the result. Results go to stdout,
progress and errors to stderr. A :class:`~shoal.errors.ShoalError` becomes one line,
``Error: ...``, and exit code 1; ``SHOAL_DEBUG=1`` shows the traceback instead.

Commands load lazily: ``shoal classify`` imports ``shoal.cli.classify`` and no other
command's module, so it never pays for the data stack, torch or the web app. To add a
command, define it in a module of this package with ``@app.command()`` (or
``app.add_typer(sub_app, name=...)``) and name it in :data:`COMMANDS`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from shoal import __version__
from shoal.errors import ConfigError, ShoalError


class _ShoalGroup(TyperGroup):
    """Turns a :class:`ShoalError` from any command into ``Error: ...`` and exit code 1.

    So does a missing optional extra (``import torch`` on the base install): the line names
    the extra to install (:func:`shoal.extras.explain`).
    """

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except (ShoalError, ImportError) as exc:
            if os.environ.get("SHOAL_DEBUG") == "1":
                raise
            if isinstance(exc, ImportError):
                from shoal.extras import explain

                known = explain(exc, f"shoal {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "shoal")
                if known is None:
                    raise
                exc = known
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None


# Each command and the module of this package that defines it. ``shoal NAME`` imports only
# that module. A command missing here still works, but running it imports every module.
COMMANDS: dict[str, str] = {
    "classify": "classify",
    "evaluate": "evaluate",
    "serve": "serve",
    "store": "store",
    "train": "train",
    "export": "train",
    "networks": "train",
    "dataset": "dataset",
    "model": "train",
    "review": "review",
    "lr-find": "lr_find",
    "import": "imports",
}


class _LazyGroup(_ShoalGroup):
    """The ``shoal`` group: imports a command's module when the command is looked up.

    Help and unknown names (for the close-match hint) import every module.
    """

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            module = COMMANDS.get(cmd_name)
            _register(*([module] if module else []))
            self._add_registered()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        _register()
        self._add_registered()
        order = list(COMMANDS)
        return sorted(self.commands, key=lambda name: order.index(name) if name in order else len(order))

    def _add_registered(self) -> None:
        for name, command in typer.main.get_group(app).commands.items():
            self.commands.setdefault(name, command)


class ConfigCommand(TyperCommand):
    """A command whose config errors name its flags (``--val``), not the config's fields (``val_pct``).

    Its parameters carry the names of the config fields they set (``val_pct`` for ``--val``).
    """

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            flags = {p.name: p.opts[0] for p in self.params if p.name and p.opts}
            raise ConfigError(exc.naming(flags)) from None


def config_option(cls: type, field: str, *flags: str, **kwargs: Any) -> Any:
    """A Typer option for a config field: unset (``None``) unless given, so the config's default holds.

    Its help is the field's comment in the dataclass and the default the dataclass gives,
    the same text the web forms and the API schema show.
    """
    from shoal.config import field_docs, shown_default

    if field not in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
        raise ValueError(f"{cls.__name__} has no field {field!r}")
    text = field_docs(cls).get(field, "")
    if " | " not in text.split(";")[0]:  # a list of choices keeps its spelling: "sgd | adam"
        text = text[:1].upper() + text[1:]
    default = shown_default(cls, field)
    if default and default not in ("True", "False"):
        text += f" (default: {default})"
    return typer.Option(None, *flags, help=text, show_default=False, **kwargs)


app = typer.Typer(
    cls=_LazyGroup,
    name="shoal",
    help="Turn a folder of labelled images into a working image classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shoal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Turn a folder of labelled images into a working image classifier."""


def _register(*modules: str) -> None:
    """Import the named command modules of this package (all of them when none is named).

    Importing a module registers its commands on :data:`app`.
    """
    if not modules:
        modules = tuple(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for module in modules:
        importlib.import_module(f"{__name__}.{module}")


def main() -> None:
    """Entry point of the ``shoal`` console script."""
    app()
