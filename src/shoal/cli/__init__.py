"""The ``shoal`` command: a thin front end over the library.

Each sub-module registers the commands of one stage; every command parses its
options, calls one library function and formats the result. Results go to stdout,
progress and errors to stderr. A :class:`~shoal.errors.ShoalError` becomes one line,
``Error: ...``, and exit code 1; ``SHOAL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os

import typer
from typer.core import TyperGroup

from shoal import __version__
from shoal.errors import ShoalError


class _ShoalGroup(TyperGroup):
    """Turns a :class:`ShoalError` from any command into ``Error: ...`` and exit code 1."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except ShoalError as exc:
            if os.environ.get("SHOAL_DEBUG") == "1":
                raise
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_ShoalGroup,
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


def _register() -> None:
    # Each stage's commands live in their own module; importing registers them.
    from shoal.cli import classify, dataset, evaluate, serve, train  # noqa: F401


def main() -> None:
    """Entry point of the ``shoal`` console script."""
    _register()
    app()
