"""The whole flow in a real browser: Playwright drives Debian's headless chromium.

It builds the built-in digits sample (and opens one of its images at full size), trains a tiny
LeNet run and watches its chart gain points without a reload, classifies an uploaded image (with
its heat-map and its layers), classifies frames of Chromium's fake camera, evaluates the model,
downloads the bundle and loads it with ``shoal.load``, classifies a list file from the dataset
page, aborts and resumes a run without a reload. Every page is saved as a screenshot under
``out/screenshots/`` (git-ignored) at 390 and 1280 px, and none may scroll sideways at 390 px.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import shoal
from shoal.server import Settings, create_app
from waiting import GENEROUS_MS, wait_for

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "out" / "screenshots"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a camera that needs no one
NOT_FOUND = "/no/such/page"  # the one page that answers 404 on purpose

# Before any script of each page: keep every (status, chart points) pair the model page shows, in order,
# so that no state can slip between two looks of the test however fast or slow the run is.
RECORD_MODEL_PAGE = """
window.__shown = [];
new MutationObserver(() => {
  const status = document.getElementById("model-status"), chart = document.getElementById("loss-chart");
  if (!status || !chart) return;
  const now = [status.textContent, +(chart.dataset.points || 0)], last = window.__shown.at(-1);
  if (!last || last[0] !== now[0] || last[1] !== now[1]) window.__shown.push(now);
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                                      "(apt-get install chromium)"),
]


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    """The web app on 127.0.0.1 at a free port, in a thread; it stops (and its workers with it) after the test.

    The socket bound here is the one uvicorn serves on: no other process can take the port in between.
    """
    import uvicorn

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = Settings(home=tmp_path / "home", roots=(tmp_path,), poll_s=0.2)
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        app_server = uvicorn.Server(config)
        thread = threading.Thread(target=app_server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        wait_for("the web app to start", lambda: app_server.started or not thread.is_alive(), every=0.05)
        if not app_server.started:
            pytest.fail("the web app stopped while starting (its log is above)")
        yield f"http://127.0.0.1:{port}"
        app_server.should_exit = True
        thread.join(timeout=60)


@contextlib.contextmanager
def open_page(problems: list[str], **options: Any) -> Iterator[Any]:
    """A page of Debian's headless chromium at 1280×900 whose script errors land in ``problems``.

    Every wait is on a condition; the deadline only catches hangs (a busy machine is slow, not stuck).
    """
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        expect.set_options(timeout=GENEROUS_MS)
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=GENEROUS_MS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, **options)
        page.set_default_timeout(GENEROUS_MS)
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        yield page
        browser.close()


def test_the_whole_flow_in_a_browser(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with open_page(problems, accept_downloads=True) as page:
        page.add_init_script(RECORD_MODEL_PAGE)
        page.on("console", lambda m: problems.append(f"console: {m.text} at {m.location.get('url')}")
                if m.type == "error" else None)
        page.on("dialog", lambda dialog: dialog.accept())  # Abort asks first
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))

        def shot(name: str) -> None:
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

        # Home, empty.
        page.goto(server + "/")
        expect(page.locator("#datasets-body")).to_contain_text("No datasets yet")
        shot("01-home-empty")

        # A dataset from the built-in sample.
        page.click("text=New dataset")
        page.fill("#f-name", "digits")
        page.check('input[name="source"][value="sample"]')
        shot("02-new-dataset")
        page.click("#create-dataset")
        page.wait_for_url(f"{server}/datasets/digits")
        expect(page.locator("#ds-status")).to_have_text("done")
        expect(page.locator("#counts tfoot")).to_contain_text("1797")
        expect(page.locator("#thumbs img")).to_have_count(48)
        page.wait_for_function("[...document.querySelectorAll('#thumbs img')].every(i => i.complete && i.naturalWidth > 0)")
        page.select_option("#label", "7")
        expect(page.locator("#page-text")).to_contain_text("135 images")
        expect(page.locator("#thumbs .cap").first).not_to_have_text("7")  # a class's page captions file names
        page.wait_for_function("[...document.querySelectorAll('#thumbs img')].every(i => i.complete && i.naturalWidth > 0)")
        shot("03-dataset")
        # An image opens at full size: the file it was made from (the sample lies inside the allowed root), its path.
        page.click("#thumbs .thumb >> nth=0")
        expect(page.locator("#image-dialog")).to_have_attribute("data-loaded", "source")
        source = Path(page.text_content("#image-source"))
        assert source.parent.name == "7" and source.is_relative_to(tmp_path / "home" / "samples" / "digits")
        with Image.open(source) as original:
            assert page.evaluate("[document.getElementById('image-full').naturalWidth, "
                                 "document.getElementById('image-full').naturalHeight]") == list(original.size)
        expect(page.locator("#image-note")).to_contain_text(f"The source at full size: {original.width}×{original.height} px")
        shot("03b-dataset-image")
        page.click("#image-close")
        expect(page.locator("#image-dialog")).to_be_hidden()

        # A model: a tiny LeNet run (3 short epochs); the schedule preview follows the policy.
        page.click("text=New model on this dataset")
        page.wait_for_url(f"{server}/models/new?dataset=digits")
        page.select_option("#f-network", "lenet")
        page.fill("#f-epochs", "3")
        page.fill("#f-batch_size", "32")
        page.fill("#f-lr", "0.1")
        page.select_option("#f-lr_policy", "step")
        page.fill("#f-step_size", "2")
        expect(page.locator("#schedule-text")).to_contain_text("step: from 0.100 to 0.0100 over 3 epochs")
        shot("04-new-model")
        page.click("#create-model")
        page.wait_for_url(f"{server}/models/digits-lenet")
        page.evaluate("window.__sameDocument = true")

        # The chart gains points while the page is open, without a reload, until the page shows "done".
        page.wait_for_function("+document.getElementById('loss-chart').dataset.points > 0")
        shot("05-model-training")
        expect(page.locator("#model-status")).to_have_text("done")
        assert page.evaluate("window.__sameDocument") is True  # no reload happened
        shown = page.evaluate("window.__shown")
        final = shown[-1][1]
        # The page showed the run unfinished with fewer points than at the end: they arrived while it watched.
        assert any(status in ("queued", "running") and points < final for status, points in shown), shown
        expect(page.locator("#epochs-body tr")).to_have_count(3)
        traces = page.evaluate("document.getElementById('loss-chart').data.map(t => [t.name, t.x.length])")
        assert dict(traces)["val accuracy"] == 3 and dict(traces)["train loss"] > 3
        assert final == dict(traces)["val accuracy"] + dict(traces)["train loss"]
        # The points came through the event stream, not by polling.
        assert page.evaluate("document.body.dataset.live") == "sse"
        assert any("/api/models/digits-lenet/stream" in u for u in requested)
        assert not any("/api/models/digits-lenet/events" in u for u in requested), requested
        # What the run really used, its times, and its log.
        expect(page.locator("#run-device")).to_have_text("cpu")
        expect(page.locator("#run-precision")).to_have_text(re.compile(r"^(float32|bfloat16 \(autocast\))$"))
        expect(page.locator("#run-finished")).not_to_have_text("–")
        expect(page.locator("#log-text")).to_contain_text("epoch")
        expect(page.locator("#log-text")).to_contain_text("done")
        expect(page.locator("#eval-split option")).to_have_count(2)  # val and train: the sample has no test split
        shot("06-model-done")

        # Classify one uploaded image, with its heat-map and its layers.
        digit = sorted((tmp_path / "home" / "samples" / "digits" / "7").glob("*.png"))[0]
        page.set_input_files("#classify-file", str(digit))
        page.check("#classify-layers")
        page.click("#classify-button")
        expect(page.locator("#classify-body tr")).to_have_count(5)
        expect(page.locator("#heatmap-figure")).to_be_visible()
        bundle = shoal.load(tmp_path / "home" / "models" / "digits-lenet" / "bundle")
        layers = bundle.layers(digit)  # what 'shoal classify --layers' computes
        expect(page.locator("#layers-body tr")).to_have_count(len(layers.layers))
        expect(page.locator("#layers-summary")).to_contain_text(f"{layers.total_parameters:,} parameters")
        expect(page.locator("#layers-weights-caption")).to_contain_text(f"({layers.first_conv})")
        expect(page.locator("#layers-body .hist").first).to_be_visible()
        page.wait_for_function("[...document.querySelectorAll('#layers-body img, #layers-weights')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        assert page.locator("#layers-body img").count() == sum(len(layer.shape) == 4 for layer in layers.layers)
        label = page.get_attribute("#classify-result", "data-label")
        expected = bundle.predict(digit)
        assert label == expected.label
        expect(page.locator("#classify-verdict")).to_contain_text(
            "It looks like none of the training images: its probabilities say little." if expected.unfamiliar
            else "It looks like the training images (unfamiliar score")
        shot("07-classified")

        # The camera: its frames are classified live, with the unfamiliar verdict, until it is stopped.
        page.click("#camera-button")
        page.wait_for_function("+(document.getElementById('camera-result').dataset.frames || 0) >= 2")
        expect(page.locator("#camera-body tr")).to_have_count(3)
        expect(page.locator("#camera-verdict")).to_contain_text("unfamiliar score")
        shot("07b-camera")
        page.click("#camera-button")
        expect(page.locator("#camera-result")).to_be_hidden()

        # Evaluate on the validation split.
        page.click("#eval-button")
        expect(page.locator("#eval-result")).to_be_visible()
        expect(page.locator("#eval-classes tr")).to_have_count(10)
        expect(page.locator("#eval-stats")).to_contain_text("calibration error (ECE)")
        expect(page.locator("#eval-stats")).to_contain_text("unfamiliar")
        page.wait_for_function("(document.getElementById('reliability-chart').data || []).length === 3")
        shot("08-evaluation")

        # Download the bundle and use it from Python.
        with page.expect_download() as download:
            page.click("#download-link")
        saved = tmp_path / "digits-lenet.shoal"
        download.value.save_as(saved)
        assert shoal.load(saved).predict(digit).to_dict() == expected.to_dict()

        # The dataset page classifies a list file on the server (DIGITS' "classify many"), digits with their class.
        listed = sorted((tmp_path / "home" / "samples" / "digits" / "3").glob("*.png"))[:4]
        (tmp_path / "three.txt").write_text("".join(f"{p} 3\n" for p in listed) + "missing.png 3\n")
        page.goto(server + "/datasets/digits")
        expect(page.locator("#list-button")).to_be_enabled()
        page.fill("#list-file", str(tmp_path / "three.txt"))
        page.click("#list-button")
        expect(page.locator("#list-body tr")).to_have_count(5)
        right = sum(bundle.predict(p).label == "3" for p in listed)
        expect(page.locator("#list-stats")).to_contain_text(f"{100 * right / 4:.1f} %")
        expect(page.locator("#list-body tr").last).to_contain_text("file not found (line 5 of three.txt)")
        shot("08b-dataset-classify-list")

        # Abort, then Resume, without a reload: a long run of the same network.
        page.goto(server + "/models/new?clone=digits-lenet")
        page.fill("#f-name", "digits-long")
        page.fill("#f-epochs", "500")
        page.click("#create-model")
        page.wait_for_url(f"{server}/models/digits-long")
        page.evaluate("window.__sameDocument = true")
        page.wait_for_function("(document.getElementById('loss-chart').data || [])"
                               ".some(t => t.name === 'val accuracy' && t.x.length > 0)")  # an epoch is saved
        page.click("#abort")
        expect(page.locator("#model-status")).to_have_text("aborted")
        expect(page.locator("#resume")).to_be_visible()
        before = int(page.get_attribute("#loss-chart", "data-points"))
        page.click("#resume")
        page.wait_for_function(f"+document.getElementById('loss-chart').dataset.points > {before}")
        expect(page.locator("#model-status")).to_have_text("running")
        page.click("#abort")
        expect(page.locator("#resume")).to_be_visible()
        assert page.evaluate("window.__sameDocument") is True
        expect(page.locator("#model-message")).to_contain_text("Resume continues from the last saved epoch")

        # The other pages.
        page.goto(server + "/")
        expect(page.locator("#models-body")).to_contain_text("digits-lenet")
        expect(page.locator("#jobs-body tr")).to_have_count(4)
        expect(page.locator("#system-body")).to_contain_text("memory")
        assert page.evaluate("document.body.dataset.live") == "sse"
        shot("09-home")
        page.goto(server + "/pretrained")
        shot("10-pretrained")
        page.goto(server + "/models/new?clone=digits-lenet")
        expect(page.locator("#f-epochs")).to_have_value("3")
        page.goto(server + NOT_FOUND)
        expect(page.locator("h1")).to_have_text("Not found")
        shot("11-not-found")

        # Every page fits a phone (390 px): nothing scrolls sideways. Screenshots at 390 and 1280 px.
        pages = {"home": "/", "new-dataset": "/datasets/new", "dataset": "/datasets/digits",
                 "new-model": "/models/new", "model": "/models/digits-lenet", "pretrained": "/pretrained",
                 "not-found": NOT_FOUND}
        for width in (390, 1280):
            page.set_viewport_size({"width": width, "height": 844 if width == 390 else 900})

            def fits(name: str) -> None:
                wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert wide <= 0, f"{name} scrolls sideways by {wide} px at {width} px"
                page.screenshot(path=str(SHOTS / f"w{width}-{name}.png"), full_page=True)

            for name, path in pages.items():
                page.goto(server + path)
                page.wait_for_load_state("load")
                if name == "dataset":  # the list's results too
                    page.fill("#list-file", str(tmp_path / "three.txt"))
                    expect(page.locator("#list-button")).to_be_enabled()
                    page.click("#list-button")
                    expect(page.locator("#list-body tr")).to_have_count(5)
                if name == "model":  # the layers, and the evaluation's tables and thumbnails
                    page.set_input_files("#classify-file", str(digit))
                    page.check("#classify-layers")
                    page.click("#classify-button")
                    expect(page.locator("#layers-body tr")).to_have_count(len(layers.layers))
                    page.click("#eval-button")
                    expect(page.locator("#eval-result")).to_be_visible()
                    page.wait_for_function("(document.getElementById('reliability-chart').data || []).length === 3")
                fits(name)
                if name == "dataset":  # and one image at full size
                    page.click("#thumbs .thumb >> nth=0")
                    expect(page.locator("#image-dialog")).to_have_attribute("data-loaded", "source")
                    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    assert wide <= 0, f"the image dialog scrolls sideways by {wide} px at {width} px"
                    page.screenshot(path=str(SHOTS / f"w{width}-dataset-image.png"))  # the dialog where it is seen
    # The one error expected: the browser's note that the deliberate 404 page answered 404.
    deliberate = ("console: Failed to load resource: the server responded with a status of 404 (Not Found) "
                  f"at {server}{NOT_FOUND}")
    assert [p for p in problems if p != deliberate] == []


def test_a_fitted_head_shows_its_cross_validation_and_the_form_turns_the_loop_off(server: str, tmp_path: Path) -> None:
    """No training here: a model folder as a fitted head leaves it (its features computed in 2 processes), and
    a stub dataset for the form."""
    import json

    from playwright.sync_api import expect

    from shoal.models import ModelFolder
    from shoal.store import Store

    store = Store(tmp_path / "home")
    with store.staging("dataset", "ds", summary={"classes": ["a", "b"], "counts": {"train": 4}}) as folder:
        (folder / "dataset.json").write_text("{}")
    store.reserve("model", "fitted", status="done", summary={"dataset": "ds", "best_epoch": 1, "val_accuracy": 0.9})
    model = ModelFolder(store.folder("model", "fitted"))
    model.write_config({"dataset": "ds", "network": "efficientnet_lite0", "pretrained": True, "head": "fit"})
    curve = [{"C": c, "log_loss": loss, "accuracy": acc}
             for c, loss, acc in ((0.01, 0.6, 0.7), (0.1, 0.3, 0.9), (1.0, 0.2, 0.95), (10.0, 0.25, 0.95))]
    events = [{"type": "start", "head": "fit", "epoch": 0, "epochs": 1, "device": "cpu (onnxruntime)", "world_size": 2},
              {"type": "fit", "method": "logistic_regression", "strength": 1.0, "folds": 5, "curve": curve},
              {"type": "epoch", "epoch": 1, "train_loss": 0.1, "val_loss": 0.25, "val_accuracy": 0.9,
               "val_unfamiliar": 0.05, "elapsed_s": 1.7},
              {"type": "done", "best_epoch": 1}]
    model.metrics_path.write_text("".join(json.dumps({"time": 0.0, **e}) + "\n" for e in events))
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with open_page(problems) as page:
        page.goto(server + "/models/fitted")
        page.wait_for_function("+document.getElementById('fit-chart').dataset.points === 4")
        traces = page.evaluate("document.getElementById('fit-chart').data.map(t => [t.name, t.x.length])")
        assert traces == [["held-out log-loss", 4], ["held-out accuracy", 4], ["chosen C = 1", 1]]
        assert page.evaluate("document.getElementById('fit-chart').layout.xaxis.type") == "log"
        expect(page.locator("#fit-stats")).to_contain_text("chosen C")
        expect(page.locator("#stats")).to_contain_text("val unfamiliar")
        expect(page.locator("#fit-text")).to_contain_text("C = 1 predicted the held-out images best "
                                                          "(log-loss 0.2000, accuracy 95.0 %)")
        expect(page.locator("#epoch-text")).to_have_text("fitted")
        expect(page.locator("#run-device")).to_have_text("cpu (onnxruntime), 2 data-parallel processes")
        expect(page.locator("#resume")).to_be_hidden()
        page.screenshot(path=str(SHOTS / "12-fitted-model.png"), full_page=True)

        # The new-model form: fine-tuning fits the head by default, so the loop's fields are off until head sgd.
        page.goto(server + "/models/new")
        expect(page.locator("#f-epochs")).to_be_enabled()  # from scratch: the loop
        page.check('input[name="start"][value="pretrained"]')
        expect(page.locator("#f-epochs")).to_be_disabled()
        expect(page.locator("#f-lr_policy")).to_be_disabled()
        expect(page.locator("#fit-note")).to_be_visible()
        expect(page.locator("#schedule-fit")).to_be_visible()
        page.select_option("#f-head", "sgd")
        expect(page.locator("#f-epochs")).to_be_enabled()
        expect(page.locator("#fit-note")).to_be_hidden()
    assert problems == []


def test_review_relabel_exclude_apply_retrain_and_find_the_learning_rate(server: str, tmp_path: Path,
                                                                         image_folder_factory,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The Review page of a model trained on shapes with flipped labels: relabel one suspect, exclude
    another, keep the rest, Apply (shapes@2 holds exactly those changes, every split kept), retrain with
    the same options; then the new-model page's Find runs the range test, draws its curve and fills in the rate."""
    import shutil

    import numpy as np
    from playwright.sync_api import expect

    from shoal import datasets
    from shoal.data.versions import version_info
    from shoal.training import TrainConfig, train

    pytest.importorskip("cleanlab")
    classes = ["circle", "square", "triangle"]
    root = image_folder_factory(classes, 24, size=(40, 32))
    rng = np.random.default_rng(3)
    for c in classes:
        for f in rng.choice(sorted((root / c).iterdir()), 3, replace=False):
            shutil.move(f, root / rng.choice([o for o in classes if o != c]) / f.name)
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    datasets.create(root, "shapes", size=32)
    model = train(TrainConfig(dataset="shapes", pretrained=True)).name
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with open_page(problems) as page:
        page.goto(f"{server}/models/{model}")
        page.click("#review-link")
        page.wait_for_url(f"**/models/{model}/review")
        cards = page.locator(".suspect")
        expect(cards.first).to_be_visible()
        assert cards.count() >= 2
        expect(page.locator("#review-message")).to_contain_text("images reviewed; flagged")
        page.wait_for_function("[...document.querySelectorAll('.suspect img')].every(i => i.complete && i.naturalWidth > 0)")
        for i in range(cards.count()):
            cards.nth(i).locator('input[value="keep"]').check()
        expect(page.locator("#apply")).to_be_disabled()  # nothing to change yet
        first, second = cards.nth(0), cards.nth(1)
        relabelled, excluded = first.get_attribute("data-image"), second.get_attribute("data-image")
        offered = first.locator("select option").evaluate_all("os => os.map(o => o.value)")  # all but the given class
        to = next(c for c in offered if c != first.locator("select").input_value())  # not the one already shown
        first.locator("select").select_option(to)  # choosing a class picks "relabel as"
        expect(first.locator('input[value="relabel"]')).to_be_checked()
        second.locator('input[value="exclude"]').check()
        expect(page.locator("#apply")).to_have_text("Apply: relabel 1, exclude 1")
        page.screenshot(path=str(SHOTS / "13-review.png"), full_page=True)
        page.click("#apply")
        expect(page.locator("#applied-text")).to_contain_text("Stored dataset shapes@2 from shapes: 1 relabelled, 1 excluded")
        v2 = datasets.load("shapes@2")
        info = version_info(v2)
        assert [(c["image"], c["to"]) for c in info["relabelled"]] == [(relabelled, to)]
        assert [c["image"] for c in info["excluded"]] == [excluded]
        old = datasets.load("shapes")
        split_of = {p: s for s in ("train", "val") for p in old.sources(s)}
        assert all(split_of[p] == s for s in ("train", "val") for p in v2.sources(s))
        assert v2.count("train") + v2.count("val") == old.count("train") + old.count("val") - 1
        page.click("#retrain")
        page.wait_for_url("**/models/shapes@2-efficientnet_lite0")
        expect(page.locator("#model-status")).to_have_text("done")

        # Find beside the learning rate: the range test (a queued job) for LeNet from scratch on shapes@2.
        page.goto(server + "/models/new")
        page.select_option("#f-dataset", "shapes@2")
        page.select_option("#f-network", "lenet")
        page.fill("#f-batch_size", "16")
        page.click("#lr-find")
        expect(page.locator("#lr-find-text")).to_contain_text("Suggested:")
        assert page.evaluate("document.getElementById('lr-find-chart').data[1].x.length") >= 5
        assert page.evaluate("document.getElementById('lr-find-chart').layout.xaxis.type") == "log"
        found = float(page.input_value("#f-lr"))
        shown = float(page.locator("#lr-find-text").inner_text().split("Suggested: ")[1].split(" ")[0])
        assert found > 0 and abs(shown - found) <= 0.05 * found
        page.screenshot(path=str(SHOTS / "14-lr-find.png"), full_page=True)
        page.check('input[name="start"][value="pretrained"]')  # a fitted head: nothing to find
        expect(page.locator("#lr-find")).to_be_disabled()
    assert problems == []
