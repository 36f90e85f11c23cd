"""The dataset stage: decoding bad files, resize modes, scanning, the split, stored datasets."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shoal import datasets
from shoal.config import from_dict, to_dict
from shoal.data.config import DataConfig
from shoal.data.imageops import ImageError, open_image, prepare, resize
from shoal.data.scan import scan, split_counts
from shoal.errors import AlreadyExistsError, ConfigError, DatasetError, InputError, NotFoundError
from shoal.store import Store
from waiting import GENEROUS_S

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "dolphins-and-seahorses"


def _stored(path: Path) -> Image.Image:
    """The image as Pillow reads it, loaded and with its file closed."""
    with Image.open(path) as img:
        out = img.copy()
        out.format = img.format
        return out


# -- files that are hard to read ----------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, rows: bytes | None = None, *, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG written by hand, so its header can claim any size (rows default to a few zeros)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = zlib.compress(rows if rows is not None else b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def write_bad_files(folder: Path) -> dict[str, Path]:
    """One file of every awkward kind the issue lists, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    files: dict[str, Path] = {}

    full = folder / "full.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, quality=90)
    data = full.read_bytes()
    files["truncated"] = folder / "truncated.jpg"
    files["truncated"].write_bytes(data[: len(data) // 2])
    full.unlink()

    files["zero"] = folder / "zero.jpg"
    files["zero"].write_bytes(b"")
    files["text"] = folder / "notes.jpg"
    files["text"].write_text("this is a text file, not a photo\n")
    files["bomb"] = folder / "bomb.png"
    files["bomb"].write_bytes(png_bytes(30000, 30000))
    return files


def test_truncated_jpeg_is_refused_with_reason(tmp_path):
    files = write_bad_files(tmp_path)
    with pytest.raises(ImageError) as err:
        open_image(files["truncated"])
    assert err.value.reason.startswith("truncated image data")
    assert isinstance(err.value, InputError)
    assert str(files["truncated"]) in str(err.value)


def test_zero_byte_and_text_files_are_refused(tmp_path):
    files = write_bad_files(tmp_path)
    with pytest.raises(ImageError, match=r"empty file \(0 bytes\)"):
        open_image(files["zero"])
    with pytest.raises(ImageError) as err:
        open_image(files["text"])
    assert err.value.reason == "not an image: its content is in no image format Pillow can read"


def test_decompression_bomb_header_is_refused_without_decoding(tmp_path):
    bomb = write_bad_files(tmp_path)["bomb"]
    with pytest.raises(ImageError) as err:
        open_image(bomb)
    assert err.value.reason.startswith("refused as a possible decompression bomb")
    assert "900 megapixels" in err.value.reason
    # Between Pillow's warning and error limits: our own check names the size.
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(10000, 10000))
    with pytest.raises(ImageError, match="claims 10000×10000 pixels"):
        open_image(big)


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    assert _stored(path).mode == "CMYK"
    img = open_image(path)
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img).reshape(-1, 3).mean(axis=0) - (255, 0, 0)).max() < 4


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, suffix):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / f"gray16.{suffix}"
    Image.fromarray(ramp).save(path)
    assert _stored(path).mode.startswith("I;16")
    pixels = np.asarray(open_image(path))
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    # Clipping would turn everything above 255 white; scaling keeps the ramp.
    assert abs(pixels.mean() - 127.5) < 1
    assert np.array_equal(pixels, np.rint(ramp / 257).astype(np.uint8))


def test_16_bit_rgb_png_keeps_its_colours(tmp_path):
    values = np.zeros((8, 8, 3), dtype=">u2")
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32768, 257
    rows = b"".join(b"\0" + row.tobytes() for row in values)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(8, 8, rows, bit_depth=16, colour_type=2))
    assert tuple(np.asarray(open_image(path))[0, 0]) == (255, 128, 1)


def test_palette_png_with_transparency_is_composited_on_white(tmp_path):
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 8, 16))  # left half red, right half index 0 = transparent
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)
    pixels = np.asarray(open_image(path))
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[0, 15]) == (255, 255, 255)  # transparent -> white, not black


def test_rgba_and_la_are_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:, :2] = (0, 0, 255, 255)
    assert tuple(np.asarray(open_image(Image.fromarray(rgba, "RGBA")))[0, 3]) == (255, 255, 255)
    assert tuple(np.asarray(open_image(Image.fromarray(rgba, "RGBA")))[0, 0]) == (0, 0, 255)
    la = Image.new("LA", (4, 4), (0, 0))
    out = open_image(la)
    assert out.mode == "L" and np.asarray(out).min() == 255


def _exif_photo(path: Path, size: tuple[int, int], orientation: int = 6) -> None:
    """A photo stored sideways: red left half, blue right half, with EXIF orientation 6
    (shown rotated 90° clockwise, so the red half belongs at the top)."""
    img = Image.new("RGB", size, (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), quality=95)


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    path = tmp_path / "sideways.jpg"
    _exif_photo(path, (40, 20))
    img = open_image(path)
    assert img.size == (20, 40)  # portrait once upright
    pixels = np.asarray(img).astype(int)
    assert pixels[:15].mean(axis=(0, 1))[0] > 240 and pixels[:15].mean(axis=(0, 1))[2] < 15  # red on top
    assert pixels[-15:].mean(axis=(0, 1))[2] > 240  # blue at the bottom


def test_exif_rotation_with_draft_decoding(tmp_path):
    path = tmp_path / "big-sideways.jpg"
    _exif_photo(path, (800, 400))
    pixels = prepare(path, (25, 50), "squash", 3).astype(int)
    assert pixels.shape == (50, 25, 3)
    assert pixels[:20, :, 0].mean() > 240 and pixels[-20:, :, 2].mean() > 240


def test_draft_mode_decodes_large_jpegs_smaller(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (2000, 1600), (10, 200, 30)).save(path)
    img = open_image(path, draft_size=(64, 64))
    assert img.size == (250, 200)  # 1/8 scale: still >= 2x the target on both sides
    assert open_image(path).size == (2000, 1600)
    assert prepare(path, 64).shape == (64, 64, 3)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = open_image(path)
    assert img.mode == "RGB" and tuple(np.asarray(img)[8, 8]) == (255, 0, 0)


def test_webp_decodes(tmp_path):
    path = tmp_path / "x.webp"
    Image.new("RGB", (16, 16), (0, 0, 255)).save(path, lossless=True)
    assert tuple(np.asarray(open_image(path))[4, 4]) == (0, 0, 255)


def test_open_image_accepts_bytes_pil_and_arrays_without_changing_them(tmp_path):
    original = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    out = open_image(original)
    assert out is not original and original.mode == "RGBA"
    buffer = tmp_path / "x.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer)
    assert tuple(np.asarray(open_image(buffer.read_bytes()))[0, 0]) == (1, 2, 3)
    assert open_image(np.zeros((5, 6), np.uint8)).size == (6, 5)
    with pytest.raises(ImageError, match="uint8"):
        open_image(np.zeros((5, 6, 3), np.float32))
    assert open_image(np.zeros((5, 6, 3), np.uint8), channels=1).mode == "L"


# -- resize modes -------------------------------------------------------------------------------
def _three_bands(width: int = 300, height: int = 100) -> Image.Image:
    """Red | green | blue vertical thirds."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 3] = (255, 0, 0)
    a[:, width // 3 : 2 * width // 3] = (0, 255, 0)
    a[:, 2 * width // 3 :] = (0, 0, 255)
    return Image.fromarray(a)


def test_squash_stretches_everything_in():
    out = resize(_three_bands(), (60, 60), "squash")
    assert out.shape == (60, 60, 3)
    assert out[:, 5, 0].min() > 240 and out[:, 30, 1].min() > 240 and out[:, 55, 2].min() > 240


def test_crop_keeps_the_centre():
    out = resize(_three_bands(), (50, 50), "crop")
    assert out.shape == (50, 50, 3)
    # the long side is cut equally at both ends: only the green middle third remains
    assert out[:, 2:-2, 1].min() > 240 and out[:, 2:-2, 0].max() < 15 and out[:, 2:-2, 2].max() < 15


def test_fill_pads_the_short_side_with_noise_not_black():
    red = Image.new("RGB", (200, 100), (255, 0, 0))
    out = resize(red, (64, 64), "fill")
    assert out.shape == (64, 64, 3)
    # long side fits: the image is 64 x 32, centred, 16 rows of noise above and below
    assert (out[16:48] == (255, 0, 0)).all()
    border = np.concatenate([out[:16], out[48:]])
    assert border.std() > 50 and len(np.unique(border)) > 200  # noise, not a flat colour
    assert np.array_equal(out, resize(red, (64, 64), "fill"))  # same image, same noise
    other = resize(Image.new("RGB", (200, 100), (250, 0, 0)), (64, 64), "fill")
    assert not np.array_equal(other[:16], out[:16])  # another image, other noise


def test_half_crops_the_long_side_and_fills_the_short_one():
    out = resize(_three_bands(300, 100), (64, 64), "half")
    # ratios 300/64 and 100/64 average 3.125: resized to 96 x 32, the width cropped 96 -> 64
    # (16 columns off each end), then 16 rows of noise above and below the 32 image rows
    assert out.shape == (64, 64, 3)
    middle = out[16:48]
    assert middle[:, 25:40, 1].min() > 240  # green centre kept
    assert middle[:, 0, 0].mean() > 200  # a little of the red third survives at the left edge
    assert out[:15].std() > 50 and out[-15:].std() > 50


def test_every_mode_gives_the_exact_size_for_any_aspect_ratio():
    rng = np.random.default_rng(0)
    for _ in range(60):
        source = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        target = (int(rng.integers(1, 200)), int(rng.integers(1, 200)))
        img = Image.new("RGB", source, (9, 9, 9))
        for mode in ("squash", "crop", "fill", "half"):
            assert resize(img, target, mode).shape == (target[1], target[0], 3), (mode, source, target)


def test_resize_grayscale_shape_and_prepare_is_deterministic(tmp_path):
    path = tmp_path / "x.png"
    _three_bands(90, 30).save(path)
    gray = prepare(path, "40x20", "fill", 1)
    assert gray.shape == (20, 40, 1) and gray.dtype == np.uint8
    assert np.array_equal(gray, prepare(path, (40, 20), "fill", 1))


def test_bad_resize_arguments_name_the_value():
    with pytest.raises(ConfigError, match="resize_mode must be one of squash, crop, fill, half, got 'zoom'"):
        prepare(np.zeros((4, 4, 3), np.uint8), 8, "zoom")
    with pytest.raises(ConfigError, match="size must be one number or WxH"):
        prepare(np.zeros((4, 4, 3), np.uint8), "8y8")
    assert resize(Image.new("RGB", (10, 10)), (5, 5), "half_crop").shape == (5, 5, 3)


# -- config -------------------------------------------------------------------------------------
def test_config_parses_and_validates():
    assert DataConfig(size="320x240").size == (320, 240)
    assert DataConfig(size=64).size == (64, 64)
    assert DataConfig().replace(grayscale=True).channels == 1
    with pytest.raises(ConfigError) as err:
        DataConfig(val_pct=120)
    assert str(err.value) == "val_pct must be a number from 0 to 90, got 120"
    with pytest.raises(ConfigError, match="val_pct \\+ test_pct must be at most 90"):
        DataConfig(val_pct=60, test_pct=40)
    with pytest.raises(ConfigError, match="did you mean 'val_pct'"):
        DataConfig().replace(val_pc=10)
    with pytest.raises(ConfigError, match="max_per_class \\(1\\) must be at least min_per_class \\(2\\)"):
        DataConfig(max_per_class=1)
    with pytest.raises(ConfigError, match="seed must be an int from 0 to 4294967295, got -1"):
        DataConfig(seed=-1)
    cfg = DataConfig(size=(10, 20), test_pct=10)
    assert from_dict(DataConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_a_dataset_from_a_newer_shoal_names_the_version_that_wrote_it(tiny_dataset):
    from shoal import __version__

    meta_path = tiny_dataset.path / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["augment"] = True
    meta["shoal_version"] = "99.0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as err:
        datasets.load("tiny")
    assert str(err.value) == (
        f"dataset 'tiny' cannot be used: this DataConfig was written by shoal 99.0, newer than this shoal "
        f"({__version__}), and has options it does not know ('augment'): upgrade shoal (pip install -U shoal) to read it"
    )


# -- scanning -----------------------------------------------------------------------------------
def test_split_counts_floor_per_class():
    assert split_counts(65, 25, 0) == (49, 16, 0)
    assert split_counts(57, 25, 0) == (43, 14, 0)
    assert split_counts(10, 25, 20) == (6, 2, 2)
    assert split_counts(1, 25, 0) == (1, 0, 0)


def test_nested_folders_belong_to_their_top_class_and_hidden_files_are_ignored(image_folder_factory):
    root = image_folder_factory(["a", "b"], 2)
    deep = root / "a" / "2019" / "summer"
    deep.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(deep / "nested.png")
    (root / "a" / ".DS_Store").write_bytes(b"junk")
    (root / ".hidden").mkdir()
    found = scan(root)
    assert found.classes == ("a", "b")
    assert deep / "nested.png" in found.files["a"]
    assert len(found.files["a"]) == 3 and not any(".DS_Store" in str(p) for p in found.files["a"])


def test_symlink_loop_does_not_hang_and_is_reported(image_folder_factory):
    root = image_folder_factory(["a", "b"], 3)
    os.symlink(root / "a", root / "a" / "loop")  # a/loop -> a
    os.symlink(root, root / "b" / "up")  # b/up -> the dataset root
    found = scan(root)
    assert len(found.files["a"]) == 3 and len(found.files["b"]) == 3
    reasons = {Path(s.path).name: s.reason for s in found.skipped}
    assert reasons["loop"].startswith("symbolic link loop")
    assert reasons["up"].startswith("symbolic link loop")


def test_list_file_paths_are_relative_to_it(tmp_path, image_folder_factory):
    root = image_folder_factory(["x", "y"], 3, name="listed")
    lines = [f"{p.relative_to(root).as_posix()} {p.parent.name}" for p in sorted(root.rglob("*.png"))]
    lines += ["# a comment", "", "missing.png x", "only-one-word"]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    found = scan(root / "train.txt")
    assert found.kind == "list" and found.classes == ("x", "y")
    assert [len(v) for v in found.files.values()] == [3, 3]
    reasons = sorted(s.reason for s in found.skipped)
    assert reasons[0] == "file not found (line 9 of train.txt)"
    assert reasons[1] == "line 10 is 'only-one-word', expected 'path label'"


def test_an_image_list_to_classify_keeps_its_order_labels_and_refusals(tmp_path, image_folder_factory):
    from shoal.data.scan import read_image_list

    root = image_folder_factory(["x", "y"], 2, name="listed")
    spaced = root / "x" / "with space.png"
    (root / "x" / "x_000.png").rename(spaced)
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((root / "y" / "y_000.png").read_bytes())
    (root / "y" / "link.png").symlink_to(outside)
    (root / "list.txt").write_text("\n".join([
        "# DIGITS' classify many: paths, with or without a class", "",
        "y/y_001.png", "x/with space.png", "x/x_001.png 0", f"{root / 'y' / 'y_000.png'} y",
        "gone.png", str(outside), "y/link.png", "x",
    ]) + "\n")
    found = read_image_list(root / "list.txt", within=[root])
    assert [(i.path, i.label, i.line) for i in found.images] == [
        (root / "y" / "y_001.png", None, 3), (spaced, None, 4), (root / "x" / "x_001.png", "0", 5),
        (root / "y" / "y_000.png", "y", 6)]
    assert [(s.path, s.reason) for s in found.skipped] == [
        (str(root / "gone.png"), "file not found (line 7 of list.txt)"),
        (str(outside), "outside the folders this server may read: copy the image into one (line 8 of list.txt)"),
        (str(root / "y" / "link.png"), "a symbolic link to a file outside the folders this server may read: copy "
                                       "the image in instead (line 9 of list.txt)"),
        (str(root / "x"), "not a regular file (line 10 of list.txt)")]
    assert len(read_image_list(root / "list.txt").images) == 6  # no roots: every file that exists
    with pytest.raises(DatasetError, match=r"lists more than 3 images: classify at most 3 at a time"):
        read_image_list(root / "list.txt", limit=3)
    (root / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DatasetError, match="lists no images: write one image path per line"):
        read_image_list(root / "empty.txt")
    with pytest.raises(DatasetError, match="is not a regular file"):  # the bounded reader refuses folders
        read_image_list(root)


# -- building datasets --------------------------------------------------------------------------
def test_tiny_dataset_layout(tiny_dataset):
    ds = tiny_dataset
    assert ds.classes == ("circle", "square", "triangle")
    assert ds.splits["train"] == {"circle": 9, "square": 9, "triangle": 9}
    assert ds.splits["val"] == {"circle": 3, "square": 3, "triangle": 3}
    assert ds.splits["test"] == {"circle": 0, "square": 0, "triangle": 0}
    train = ds.images("train")
    assert isinstance(train, np.memmap) and train.shape == (27, 32, 32, 3) and train.dtype == np.uint8
    labels = ds.labels("train")
    assert labels.dtype == np.int64 and sorted(np.bincount(labels)) == [9, 9, 9]
    sources = ds.sources("val")
    assert len(sources) == 9 and all(Path(s).is_file() for s in sources)
    # every stored row is exactly what prepare() gives for its source: inference sees the same pixels
    for split_name in ("train", "val"):
        for row, src, label in zip(ds.images(split_name), ds.sources(split_name), ds.labels(split_name)):
            assert np.array_equal(row, prepare(src, (32, 32), "squash", 3))
            assert Path(src).parent.name == ds.classes[label]
    files = {p.name for p in ds.path.iterdir()}
    assert {"dataset.json", "mean.npy", "mean.png", "train_images.npy", "val_labels.npy", "test_sources.txt"} <= files


def test_mean_image_is_the_mean_of_the_training_images(tiny_dataset):
    mean = tiny_dataset.mean_image()
    assert mean.dtype == np.float32 and mean.shape == (32, 32, 3)
    assert np.allclose(mean, np.asarray(tiny_dataset.images("train"), np.float64).mean(axis=0), atol=1e-3)
    png = _stored(tiny_dataset.mean_image_path)
    assert png.size == (32, 32) and png.mode == "RGB"


def test_split_is_stratified_and_reproducible(shoal_home, image_folder_factory):
    root = image_folder_factory(["a", "b", "c"], [10, 7, 4], size=(12, 12))
    ds = datasets.create(root, "s1", size=8, val_pct=25, test_pct=20, seed=3)
    assert ds.splits["val"] == {"a": 2, "b": 1, "c": 1}
    assert ds.splits["test"] == {"a": 2, "b": 1, "c": 0}
    assert ds.splits["train"] == {"a": 6, "b": 5, "c": 3}
    again = datasets.create(root, "s2", size=8, val_pct=25, test_pct=20, seed=3)
    other = datasets.create(root, "s3", size=8, val_pct=25, test_pct=20, seed=4)
    assert again.sources("val") == ds.sources("val") and again.sources("train") == ds.sources("train")
    assert other.sources("val") != ds.sources("val")
    assert set(ds.sources("train")).isdisjoint(ds.sources("val"))


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the dolphins/seahorses folder is not here")
def test_reference_folder_gives_49_43_train_and_16_14_val(shoal_home):
    ds = datasets.create(REFERENCE, "dolphins-and-seahorses", size=32)
    assert ds.splits["train"] == {"dolphin": 49, "seahorse": 43}
    assert ds.splits["val"] == {"dolphin": 16, "seahorse": 14}
    assert ds.skipped == ()


def test_bad_files_are_skipped_with_reasons_and_never_stop_the_build(shoal_home, image_folder_factory):
    root = image_folder_factory(["good", "mixed"], [6, 6], size=(24, 24))
    bad = write_bad_files(root / "mixed")
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(root / "mixed" / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(root / "mixed" / "gray16.tif")
    ds = datasets.create(root, "mixed", size=16)
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert reasons["truncated.jpg"].startswith("truncated image data")
    assert reasons["zero.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.jpg"].startswith("not an image")
    assert reasons["bomb.png"].startswith("refused as a possible decompression bomb")
    assert set(reasons) == {p.name for p in bad.values()}
    assert ds.count() == 6 + 8  # the CMYK JPEG and the 16-bit TIFF are used
    # the split is taken on the usable images: floor(8 * 25%) = 2 validation images of 'mixed'
    assert ds.splits["val"] == {"good": 1, "mixed": 2}
    for row, src in zip(ds.images("train"), ds.sources("train")):
        assert np.array_equal(row, prepare(src, 16, "squash", 3))
    shown = json.loads((ds.path / "dataset.json").read_text())["skipped"]
    assert {"path": str(bad["zero"]), "reason": "empty file (0 bytes)"} in shown


def test_unicode_names_are_kept(shoal_home, tmp_path):
    root = tmp_path / "fotos"
    for cls, colour in [("café", (200, 10, 10)), ("поплавок", (10, 200, 10))]:
        (root / cls).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (10, 10), colour).save(root / cls / f"ñandú_🐬_{k}.png")
    ds = datasets.create(root, "unicode", size=8, val_pct=0)
    assert ds.classes == ("café", "поплавок")
    assert any("ñandú_🐬_0.png" in s for s in ds.sources("train"))
    assert datasets.load("unicode").classes == ("café", "поплавок")


def test_symlink_loop_in_a_dataset_is_reported(shoal_home, image_folder_factory):
    root = image_folder_factory(["a", "b"], 3, size=(10, 10))
    os.symlink(root / "a", root / "a" / "again")
    ds = datasets.create(root, "looped", size=8)
    assert ds.count() == 6
    assert [s.reason.split(":")[0] for s in ds.skipped] == ["symbolic link loop"]


def test_empty_class_folder_is_left_out_and_reported(shoal_home, image_folder_factory):
    root = image_folder_factory(["a", "b"], 3, size=(10, 10))
    (root / "empty").mkdir()
    ds = datasets.create(root, "with-empty", size=8)
    assert ds.classes == ("a", "b")
    assert [(s.path, s.reason) for s in ds.skipped] == [
        (str(root / "empty"), "class 'empty' left out: no image files")
    ]


def test_one_class_is_refused_with_what_to_do(shoal_home, image_folder_factory):
    root = image_folder_factory(["cats"], 4, size=(10, 10), name="photos")
    with pytest.raises(DatasetError) as err:
        datasets.create(f"{root}/", "one")
    assert str(err.value) == f"'{root}/' has 1 class folder ('cats'); need at least 2 — add one subfolder per label"
    assert not Store().exists("dataset", "one")


def test_no_class_folders_and_missing_path_are_refused(shoal_home, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "loose.png")
    with pytest.raises(DatasetError, match=r"has 0 class folders; need at least 2 — add one subfolder per label"):
        datasets.create(flat, "flat")
    with pytest.raises(DatasetError) as err:
        datasets.create(tmp_path / "nowhere", "nowhere")
    assert str(err.value) == (
        f"'{tmp_path / 'nowhere'}' does not exist: give a folder with one sub-folder of images per class, "
        "or a list file of 'path label' lines"
    )


def test_classes_left_with_too_few_usable_images_are_refused(shoal_home, image_folder_factory):
    root = image_folder_factory(["a", "b"], [3, 1], size=(10, 10))
    with pytest.raises(DatasetError) as err:
        datasets.create(root, "few")
    assert "has 1 usable class ('a'); need at least 2 — left out 'b': 1 image file, fewer than min_per_class (2)" in str(
        err.value
    )
    ds = datasets.create(root, "few", min_per_class=1)
    assert ds.classes == ("a", "b")


def test_duplicate_name_is_refused(tiny_dataset, image_folder_factory):
    with pytest.raises(AlreadyExistsError) as err:
        datasets.create(image_folder_factory(), "tiny")
    assert "a dataset named 'tiny' already exists" in str(err.value)
    assert "delete it first with 'shoal dataset delete tiny'" in str(err.value)


def test_min_and_max_per_class(shoal_home, image_folder_factory):
    root = image_folder_factory(["a", "b", "c"], [12, 12, 1], size=(10, 10))
    ds = datasets.create(root, "capped", size=8, max_per_class=8)
    assert ds.classes == ("a", "b")
    assert ds.splits["train"] == {"a": 6, "b": 6} and ds.splits["val"] == {"a": 2, "b": 2}
    assert ds.skipped[0].reason == "class 'c' left out: 1 image file, fewer than min_per_class (2)"
    other = datasets.create(root, "capped-other", size=8, max_per_class=8, seed=1)
    assert set(other.sources("train")) != set(ds.sources("train"))  # a seeded random subset


def test_list_file_dataset(shoal_home, image_folder_factory):
    root = image_folder_factory(["x", "y"], 4, name="listed", size=(10, 10))
    lines = [f"{p.relative_to(root).as_posix()} {p.parent.name}" for p in sorted(root.rglob("*.png"))]
    (root / "list.txt").write_text("\n".join(lines) + "\nmissing.png y\n")
    ds = datasets.create(None, "from-list", list_file=root / "list.txt", size=8)
    assert ds.classes == ("x", "y") and ds.count() == 8
    assert ds.splits["val"] == {"x": 1, "y": 1}
    assert [Path(s.path).name for s in ds.skipped] == ["missing.png"]
    same = datasets.create(root / "list.txt", "from-list-2", size=8)  # a file as source is a list file
    assert same.sources("train") == ds.sources("train")


def test_separate_validation_folder(shoal_home, image_folder_factory):
    train = image_folder_factory(["a", "b"], 5, name="train-src", size=(10, 10))
    val = image_folder_factory(["a", "b"], [2, 3], name="val-src", size=(10, 10), seed=5)
    ds = datasets.create(train, "with-val", size=8, val_folder=val)
    assert ds.splits["train"] == {"a": 5, "b": 5}
    assert ds.splits["val"] == {"a": 2, "b": 3}
    assert all(s.startswith(str(val)) for s in ds.sources("val"))
    stray = image_folder_factory(["a", "zebra"], 2, name="stray", size=(10, 10))
    with pytest.raises(DatasetError, match="has class 'zebra', which the training source does not have"):
        datasets.create(train, "stray", size=8, val_folder=stray)


def test_parallel_build_matches_single_process_and_reports_progress(shoal_home, image_folder_factory):
    root = image_folder_factory(["a", "b", "c"], 20, size=(20, 16))
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    calls: list[tuple[int, int]] = []
    parallel = datasets.create(root, "par", size=12, resize_mode="fill", workers=2, progress=lambda d, t: calls.append((d, t)))
    single = datasets.create(root, "one", size=12, resize_mode="fill", workers=1)
    for split_name in ("train", "val"):
        assert np.array_equal(parallel.images(split_name), single.images(split_name))
        assert parallel.sources(split_name) == single.sources(split_name)
    assert calls[0] == (0, 61) and calls[-1] == (61, 61)
    assert [Path(s.path).name for s in parallel.skipped] == ["broken.png"]
    assert parallel.splits["val"] == {"a": 5, "b": 5, "c": 5}


def test_a_failed_build_leaves_nothing_behind(shoal_home, image_folder_factory, monkeypatch):
    from shoal.data import dataset as dataset_module

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(dataset_module, "_write_mean", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        datasets.create(image_folder_factory(size=(10, 10)), "broken")
    store = Store()
    assert not store.exists("dataset", "broken")
    assert not store.folder("dataset", "broken").exists()
    assert list((shoal_home / "tmp").iterdir()) == []


def test_load_list_delete_show(tiny_dataset):
    assert [d.name for d in datasets.list()] == ["tiny"]
    loaded = datasets.load("tiny")
    assert loaded == tiny_dataset
    shown = loaded.to_dict()
    assert {"name", "classes", "size", "channels", "splits", "skipped", "mean_image"} <= set(shown)
    assert shown["size"] == [32, 32] and shown["splits"]["val"]["square"] == 3
    assert Path(shown["mean_image"]).is_file()
    assert "circle" in loaded.summary() and "stored in" in loaded.summary()
    datasets.delete("tiny")
    assert datasets.list() == []
    with pytest.raises(NotFoundError, match="no dataset named 'tiny'"):
        datasets.load("tiny")


def test_explore_writes_a_contact_sheet(tiny_dataset, tmp_path):
    out = datasets.explore("tiny", tmp_path / "sheets" / "tiny.png", per_class=4)
    sheet = _stored(out)
    assert sheet.format == "PNG"
    # 3 rows of 4 thumbnails, each upscaled to 64 px
    assert sheet.height >= 3 * 64 and sheet.width >= 4 * 64
    pixels = np.asarray(sheet.convert("RGB")).astype(int)
    assert (pixels[..., 0] > 180).any() and (pixels[..., 2] > 180).any()  # the classes' colours show


def test_grayscale_dataset(shoal_home, image_folder_factory):
    ds = datasets.create(image_folder_factory(size=(10, 10)), "gray", size=(12, 8), grayscale=True, resize_mode="crop")
    assert ds.channels == 1 and ds.images("train").shape[1:] == (8, 12, 1)
    assert ds.mean_image().shape == (8, 12, 1)
    assert _stored(ds.mean_image_path).mode == "L"


def test_shoal_datasets_is_the_public_name():
    import shoal

    from shoal.data.dataset import list_datasets

    assert shoal.datasets.create is datasets.create
    assert shoal.datasets.list is list_datasets


def test_building_a_dataset_never_imports_torch(tmp_path, image_folder_factory):
    root = image_folder_factory(["a", "b"], 30, size=(12, 12))
    code = (
        "import sys\n"
        "from shoal import datasets\n"
        "from shoal.store import Store\n"
        f"ds = datasets.create({str(root)!r}, 'x', store=Store({str(tmp_path / 'home')!r}), size=8, workers=2)\n"
        "heavy = sorted(m for m in ('torch', 'sklearn', 'scipy', 'torchvision', 'timm') if m in sys.modules)\n"
        "print(ds.count(), heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GENEROUS_S, check=True)
    assert out.stdout.strip() == "60 []"



def test_builds_from_a_threaded_process_decode_in_threads(shoal_home, image_folder_factory):
    import threading

    from shoal.data import decode

    root = image_folder_factory(["a", "b"], 30, size=(12, 12))
    reference = datasets.create(root, "forked", size=8, workers=2)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # like a web server's threads: forking is unsafe now
    other.start()
    try:
        assert not decode._fork_is_safe()
        threaded = datasets.create(root, "threaded", size=8, workers=2)
    finally:
        stop.set()
        other.join()
    assert np.array_equal(threaded.images("train"), reference.images("train"))
