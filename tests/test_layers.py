"""Dependencies run one way: data → networks → training → bundle → inference, never back."""

from __future__ import annotations

import subprocess
import sys

from waiting import GENEROUS_S


def _imported_after(code: str) -> list[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted(m for m in sys.modules if m.startswith(('shoal', 'torch')))))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=GENEROUS_S, check=True)
    return done.stdout.split()


def test_bundle_and_inference_import_nothing_from_training():
    loaded = _imported_after("import shoal.bundle, shoal.bundle.card, shoal.models, shoal.inference, "
                             "shoal.inference.classifier, shoal.inference.runtimes")
    assert "shoal.bundle" in loaded and "shoal.inference.classifier" in loaded
    assert [m for m in loaded if m.startswith("shoal.training")] == []
    assert "torch" not in loaded  # the ONNX path and the model folder stay torch-free


def test_the_bundle_writer_needs_networks_but_not_training():
    loaded = _imported_after("import shoal.bundle.writer")
    assert "shoal.networks.normalized" in loaded
    assert [m for m in loaded if m.startswith("shoal.training")] == []
