"""The ``shoal`` command's lazy registry: ``COMMANDS`` names every command and the module that defines it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from shoal.cli import COMMANDS, _register, app
from waiting import GENEROUS_S


def _defining_modules() -> dict[str, str]:
    """Every registered command or group, and the module of ``shoal.cli`` that registers it."""
    _register()
    found = {}
    for info in app.registered_commands:
        name = info.name or typer.main.get_command_name(info.callback.__name__)
        found[name] = info.callback.__module__
    for info in app.registered_groups:
        sub = info.typer_instance
        callbacks = [c.callback for c in sub.registered_commands] + [sub.registered_callback and sub.registered_callback.callback]
        modules = {c.__module__ for c in callbacks if c is not None}
        assert len(modules) == 1, f"group {info.name!r} is defined across {sorted(modules)}"
        found[info.name] = modules.pop()
    return found


def test_every_command_is_named_in_COMMANDS_with_the_module_that_defines_it():
    found = _defining_modules()
    missing = sorted(set(found) - set(COMMANDS))
    assert not missing, f"add {missing} to shoal.cli.COMMANDS, or 'shoal {missing[0]}' imports every command module"
    assert {name: f"shoal.cli.{module}" for name, module in COMMANDS.items()} == found


def _modules_after(*args: str) -> set[str]:
    """The modules a whole ``shoal ARGS`` process has imported when it ends."""
    code = (
        "import sys\n"
        "from shoal.cli import main\n"
        f"sys.argv = ['shoal', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GENEROUS_S,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return set(done.stderr.splitlines())


def test_a_command_imports_only_its_own_module():
    loaded = _modules_after("store", "--help")
    assert sorted(m for m in loaded if m.startswith("shoal.cli.")) == ["shoal.cli.store"]


def test_the_top_level_help_lists_every_command_in_registry_order():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = [line.strip("│ ").split()[0] for line in result.stdout.splitlines()
              if line.startswith("│ ") and line.strip("│ ").split()[0] in {*COMMANDS, *_defining_modules()}]
    assert listed == list(COMMANDS)


def test_import_input_size_is_read_as_every_size_is():
    from shoal.cli.imports import _size
    from shoal.errors import ConfigError

    assert _size(None) is None
    assert _size("320x240") == (320, 240)  # (width, height), as the importer takes it
    assert _size("227") == (227, 227)  # one number: a square, as --size takes it
    with pytest.raises(ConfigError, match=r"^--input-size must be one number or WxH, .*got '0x5'$"):
        _size("0x5")
