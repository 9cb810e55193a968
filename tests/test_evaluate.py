"""Metrics on hand-computable cases, classical baselines, and the evaluation CLI end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import metrics
from core.checkpoint import save_model_file
from core.evaluate import evaluate, main, navier_stokes, run_baselines, seeded_pairs, telea
from core.inference import Inpainter
from core.masks import BUCKETS, MaskGenerator, bucket_name
from core.model import PConvUNet

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent


def _gradient(h: int, w: int, shift: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 3 + shift, y * 3, (x + y) * 2], -1).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model_file(path, PConvUNet(layers=4, width=8))
    return path


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_gradient(64, 64)).save(folder / "a.png")
    Image.fromarray(_gradient(80, 64, shift=40)).save(folder / "b.png")  # centre-cropped
    return folder


# -- metrics ---------------------------------------------------------------------------------
def test_identical_images() -> None:
    a = _gradient(32, 32)
    assert metrics.l1(a, a.copy()) == 0.0
    assert metrics.psnr(a, a.copy()) == math.inf
    assert metrics.ssim(a, a.copy()) == pytest.approx(1.0)


def test_constant_offset_has_known_l1_and_psnr() -> None:
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a + 10
    assert metrics.l1(a, b) == pytest.approx(10 / 255)
    assert metrics.psnr(a, b) == pytest.approx(20 * math.log10(255 / 10))  # 28.13 dB
    assert metrics.ssim(a, b) < 1.0


def test_metrics_reject_mismatched_inputs() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError):
        metrics.l1(a, np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError):
        metrics.psnr(a, a.astype(np.float32))


# -- baselines -------------------------------------------------------------------------------
def test_baselines_fill_only_the_hole() -> None:
    image = _gradient(48, 48)
    hole = np.zeros((48, 48), bool)
    hole[10:20, 15:30] = True
    for fill in (telea, navier_stokes):
        out = fill(image, hole)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out[~hole], image[~hole])
        assert metrics.l1(out, image) < 0.01  # a smooth gradient is easy to continue
    flat = np.full((32, 32, 3), (200, 50, 10), np.uint8)  # RGB order survives the BGR trip
    hole = np.zeros((32, 32), bool)
    hole[8:16, 8:16] = True
    for out in run_baselines(flat, hole).values():
        error = int(np.abs(out.astype(int) - flat.astype(int)).max())
        assert error <= 3  # OpenCV rounds a little; swapped channels would be off by 190


def test_evaluate_function_summarises_per_bucket(tiny_model: Path) -> None:
    inpainter = Inpainter.from_checkpoint(tiny_model, device="cpu")
    gen = MaskGenerator(seed=0)
    images = [_gradient(64, 64)] * 3
    holes = [gen.generate(64, 64, bucket=b) for b in (BUCKETS[0], BUCKETS[0], BUCKETS[3])]
    holes.append(np.zeros((64, 64), bool))  # empty: skipped
    images.append(images[0])
    result = evaluate(inpainter, images, holes, groups=["x", "x", "y", "y"])
    assert result["count"] == 3 and len(result["skipped"]) == 1
    buckets = result["buckets"]
    assert buckets[bucket_name(BUCKETS[0])]["count"] == 2
    assert buckets[bucket_name(BUCKETS[3])]["count"] == 1
    assert buckets["all"]["count"] == 3
    for method in ("pconv", "telea", "navier_stokes"):
        assert set(buckets["all"][method]) == {"l1", "psnr", "ssim"}
    assert set(result["groups"]) == {"x", "y"}
    only = evaluate(None, images[:1], holes[:1], methods=["telea"])
    assert only["methods"] == ["telea"] and "pconv" not in only["buckets"]["all"]


# -- command line ----------------------------------------------------------------------------
def test_cli_end_to_end(
    tiny_model: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (image_dir / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tiny_model), "--images", str(image_dir), "--size", "64",
            "--out", str(out), "--device", "cpu", "--per-bucket", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    header = next(line for line in captured.out.splitlines() if line.startswith("| bucket"))
    for label in ("PConv PSNR", "Telea PSNR", "NS PSNR", "PConv SSIM", "NS l1 %"):
        assert label in header
    for bucket in BUCKETS:
        assert f"| {bucket_name(bucket)} |" in captured.out
    assert "broken.jpg" in captured.err
    data = json.loads((out / "metrics.json").read_text())
    # 2 images x 6 buckets x (no border, border) x 1
    assert data["count"] == 24 and data["buckets"]["all"]["count"] == 24
    assert data["checkpoint"] == str(tiny_model)
    assert data["settings"]["size"] == 64 and data["settings"]["border_margins"] == [0, 4]
    assert data["settings"]["precision"] == "fp32"
    assert set(data["groups"]) == {"no border", "border 4px"}
    for method in ("pconv", "telea", "navier_stokes"):
        assert data["buckets"][bucket_name(BUCKETS[2])][method]["psnr"] > 0
    assert (out / "psnr_by_bucket.png").stat().st_size > 0
    examples = sorted((out / "examples").glob("*.jpg"))
    assert len(examples) == 6
    with Image.open(examples[0]) as grid:
        assert grid.width > 5 * 64 and grid.height > 64


def test_cli_with_mask_folder(
    tiny_model: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    for i, bucket in enumerate((BUCKETS[1], BUCKETS[4], BUCKETS[5])):
        hole = MaskGenerator(seed=i).generate(128, 128, bucket=bucket)
        Image.fromarray(hole.astype(np.uint8) * 255).save(masks / f"m{i}.png")
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tiny_model), "--images", str(image_dir), "--masks", str(masks),
            "--size", "64", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["count"] == 3  # max(2 images, 3 masks), images cycled
    assert data["settings"]["mask_files"] == 3
    assert "Telea" in capsys.readouterr().out


def test_cli_missing_images_folder_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "core.evaluate", "--images", str(tmp_path / "nope"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "nope" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("problem", ["no images", "bad checkpoint", "bad margin",
                                     "images is a file", "out under a file"])
def test_cli_user_mistakes_exit_2(
    problem: str, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--images", str(image_dir), "--size", "64", "--out", str(tmp_path / "o"),
            "--device", "cpu"]
    if problem == "no images":
        empty = tmp_path / "empty"
        empty.mkdir()
        argv[1] = str(empty)
    elif problem == "bad checkpoint":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"junk")
        argv += ["--checkpoint", str(bad)]
    elif problem == "images is a file":
        argv[1] = str(next(image_dir.iterdir()))
    elif problem == "out under a file":  # found before any scoring, not after it
        (tmp_path / "afile").write_text("keep")
        argv[5] = str(tmp_path / "afile" / "o")
    else:
        argv += ["--border-margin", "30"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    if problem == "images is a file":
        assert err[0].endswith("is not a folder"), err
    if problem == "out under a file":
        assert "cannot write there" in err[0] and (tmp_path / "afile").read_text() == "keep"


def test_seeded_pairs_are_the_pairs_the_cli_scores(
    tiny_model: Path, image_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert main(["--checkpoint", str(tiny_model), "--images", str(image_dir), "--size", "64",
                 "--out", str(out), "--device", "cpu", "--examples", "0", "--seed", "3"]) == 0
    scored = json.loads((out / "metrics.json").read_text())["pairs"]
    photos, holes = seeded_pairs(image_dir, 64, 3)
    assert len(photos) == len(holes) == len(scored) == 24
    assert [round(float(h.mean()), 6) for h in holes] == [
        round(p["hole_ratio"], 6) for p in scored]
    assert all(p.shape == (64, 64, 3) for p in photos)
    _, other = seeded_pairs(image_dir, 64, 4)
    assert not all(np.array_equal(a, b) for a, b in zip(holes, other))
