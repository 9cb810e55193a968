"""``python -m desktop_app --self-test`` in a fresh process, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop_app.__main__ import parse_args

ROOT = Path(__file__).resolve().parents[2]


def run_self_test(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("QT_QPA_PLATFORM", None)  # the self-test must go offscreen by itself
    return subprocess.run(
        [sys.executable, "-m", "desktop_app", "--self-test", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120,
    )


def test_self_test_passes_with_a_checkpoint(tiny_model_path):
    proc = run_self_test("--checkpoint", str(tiny_model_path), "--device", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "self-test passed" in out.splitlines()[-1]
    assert "device: CPU" in out
    assert "torch " in out and "PySide6 " in out
    assert "equals the photo outside the hole: OK" in out
    assert "no torchvision, no trainer: OK" in out


def test_self_test_fails_clearly_without_a_model(tmp_path):
    proc = run_self_test(env={"PCONV_RESOURCES": str(tmp_path)})
    assert proc.returncode == 1
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("self-test FAILED: no model available")
    assert "--checkpoint" in last


def test_self_test_fails_on_a_bad_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = run_self_test("--checkpoint", str(bad), "--device", "cpu")
    assert proc.returncode == 1
    assert "self-test FAILED: loading the model" in proc.stdout
    assert "bad.pt" in proc.stdout


def test_command_line_arguments():
    args = parse_args(["photo.jpg", "--checkpoint", "m.safetensors", "--device", "cpu"])
    assert (args.image, args.checkpoint, args.device, args.self_test) == (
        "photo.jpg", "m.safetensors", "cpu", False)
    assert parse_args(["--self-test"]).self_test


def test_the_app_never_imports_torchvision_or_the_trainer():
    code = ("import sys, desktop_app.main_window, desktop_app.selftest, core.inference; "
            "bad = [m for m in ('torchvision', 'core.train') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_installed_entry_point_starts():
    script = Path(sys.executable).with_name("pconv-studio")
    if not script.exists():
        pytest.skip("pconv-studio is not installed in this environment")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pconv-studio ")
