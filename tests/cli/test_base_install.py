"""The base install (``pip install shoal``, no extras): every command works or says in one line which extra to install.

Each command runs in a subprocess whose import system cannot find the extras' modules: every
finder on ``sys.meta_path`` is wrapped so that torch, timm, FastAPI, uvicorn, scikit-learn, ONNX...
are not found, as on a machine where they were never installed (``importlib.util.find_spec``
returns None and ``import torch`` raises ``ModuleNotFoundError``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import GENEROUS_S

from shoal.extras import EXTRA_OF, EXTRAS

BLOCKED = sorted(EXTRA_OF)  # every module an extra installs

BOOT = """
import sys

BLOCKED = set(sys.argv[1].split(","))


class _Hiding:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        find = getattr(self._finder, "find_spec", None)
        return None if find is None else find(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self._finder, attribute)


sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]
sys.argv = ["shoal", *sys.argv[2:]]
from shoal.cli import main

main()
"""

TRAIN_LINE = "needs the [train] extra (torch and 5 more are not installed): pip install 'shoal[train]'"


def base_shoal(*args: str, home: Path, blocked: list[str] = BLOCKED) -> subprocess.CompletedProcess[str]:
    """Run ``shoal ARGS`` as the base install would, with ``SHOAL_HOME=home``."""
    env = {**os.environ, "SHOAL_HOME": str(home), "COLUMNS": "200"}
    env.pop("SHOAL_DEBUG", None)
    return subprocess.run([sys.executable, "-c", BOOT, ",".join(blocked), *args], capture_output=True, text=True,
                          env=env, timeout=GENEROUS_S)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_harness_hides_the_extras(tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", BOOT.replace("from shoal.cli import main\n\nmain()",
                                            "import importlib.util\nprint(importlib.util.find_spec('torch'))\nimport torch"),
         ",".join(BLOCKED)], capture_output=True, text=True, timeout=GENEROUS_S)
    assert probe.stdout == "None\n"
    assert "ModuleNotFoundError: No module named 'torch'" in probe.stderr


@pytest.mark.parametrize(("args", "line"), [
    (("train", "--dataset", "digits"), f"Error: shoal train {TRAIN_LINE}"),
    (("train", "--resume", "digits-lenet"), f"Error: shoal train {TRAIN_LINE}"),
    (("networks",), f"Error: shoal networks {TRAIN_LINE}"),
    (("serve",), "Error: shoal serve needs the [web] extra (fastapi and 3 more are not installed): "
                 "pip install 'shoal[web]'"),
    (("export", "nosuch", "--out", "x.shoal"),
     "Error: no model named 'nosuch' in {home} (known: none yet)"),
    (("dataset", "sample"), "Error: the built-in sample needs scikit-learn (it ships the digits images): "
                            "install it with 'pip install scikit-learn'"),
    (("review", "digits-lenet"), "Error: shoal review needs the [review] extra (cleanlab and 2 more are not "
                                 "installed): pip install 'shoal[review]'"),
])
def test_commands_needing_an_extra_say_which_in_one_line(tmp_path: Path, args: tuple[str, ...], line: str) -> None:
    home = tmp_path / "home"
    assert one_line_error(base_shoal(*args, home=home)) == line.format(home=home)


def test_export_checks_the_name_before_torch_then_names_the_extra(tmp_path: Path) -> None:
    from shoal.models import ModelFolder
    from shoal.store import Store

    home = tmp_path / "home"
    entry = Store(home).reserve("model", "digits-lenet", status="done", summary={"dataset": "digits"})
    ModelFolder(entry.path).write_config({"dataset": "digits", "network": "lenet", "head": "sgd"})
    assert one_line_error(base_shoal("export", "digits-lenet", "--out", str(tmp_path / "x.shoal"), home=home)) == \
        f"Error: shoal export {TRAIN_LINE.replace('torch and 5 more are', 'torch is')}"


def test_a_partial_install_names_the_missing_module(tmp_path: Path) -> None:
    result = base_shoal("train", "--dataset", "digits", home=tmp_path / "home", blocked=["sklearn"])
    assert one_line_error(result) == ("Error: shoal train needs the [train] extra (sklearn is not installed): "
                                      "pip install 'shoal[train]'")


def test_an_extra_imported_past_the_checks_is_one_line_and_other_import_errors_are_not_hidden() -> None:
    import typer
    from typer.testing import CliRunner

    from shoal.cli import _ShoalGroup

    app = typer.Typer(cls=_ShoalGroup)

    @app.command()
    def web() -> None:
        raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")

    @app.command()
    def bug() -> None:
        raise ModuleNotFoundError("No module named 'shoal.nothing'", name="shoal.nothing")

    result = CliRunner().invoke(app, ["web"])
    assert (result.exit_code, result.output) == (
        1, "Error: shoal web needs the [web] extra (uvicorn is not installed): pip install 'shoal[web]'\n")
    result = CliRunner().invoke(app, ["bug"])
    assert isinstance(result.exception, ModuleNotFoundError)


@pytest.mark.parametrize("args", [("--help",), ("train", "--help"), ("serve", "--help"), ("model", "list", "--json"),
                                  ("dataset", "list", "--json"), ("store", "--json")])
def test_commands_that_need_no_extra_work(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = base_shoal(*args, home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if "--json" in args:
        json.loads(result.stdout)


def test_every_extra_module_is_blocked() -> None:
    assert set(EXTRAS["train"]) | set(EXTRAS["web"]) <= set(BLOCKED)


def test_review_with_only_cleanlab_installed_names_the_review_extra(tmp_path: Path) -> None:
    """pyproject's [review] also installs scikit-learn and ONNX (the out-of-fold head, the embeddings)."""
    result = base_shoal("review", "digits-lenet", home=tmp_path / "home", blocked=["sklearn", "onnx"])
    assert one_line_error(result) == ("Error: shoal review needs the [review] extra (sklearn and 1 more are not "
                                      "installed): pip install 'shoal[review]'")


def test_the_extras_name_what_pyproject_installs() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = pyproject["project"]["optional-dependencies"]
    module = {"cleanlab": "cleanlab", "scikit-learn": "sklearn", "onnx": "onnx", "opencv-python-headless": "cv2"}
    for extra in ("review", "video"):
        names = [req.split(">")[0].split("=")[0].split("<")[0].strip() for req in wanted[extra]]
        assert set(EXTRAS[extra]) == {module[n] for n in names}, extra
