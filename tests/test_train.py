"""The trainer end to end (``python -m core.train`` in subprocesses) on tiny synthetic photos.

Every run is CPU-only, 32x32 crops of a 4-level, width-8 U-Net, so the cost is mostly the
interpreter start (~4 s of CPU each). All the runs the selected tests need are started together
(Popen) and collected by the tests; a run that builds on another (resume, fine-tune) starts as
soon as that one has finished. On a 2-core machine this about halves the wall time of running
them one after another.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.checkpoint import load_checkpoint, model_from_checkpoint
from core.inference import Inpainter
from core.train import LOGGED, TrainConfig, parse_args, scheduled_lr

ROOT = Path(__file__).resolve().parent.parent
# Seconds to wait for any one trainer subprocess: alone each takes ~5-10 s, but all of them
# at once on a busy 2-core machine have taken ~90 s.
TIMEOUT = 200
TINY = [
    "--image-size", "32", "--layers", "4", "--width", "8", "--batch-size", "2",
    "--workers", "0", "--device", "cpu",
]


# -- helpers --------------------------------------------------------------------------------
def _photo(rng: np.random.Generator, h: int = 80, w: int = 96) -> np.ndarray:
    """A smooth random gradient plus noise, (h, w, 3) uint8."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b, c = rng.uniform(-1.5, 1.5, size=(3, 3))
    base = np.stack([a[i] * x + b[i] * y + c[i] * 60 + 128 for i in range(3)], -1)
    base += rng.normal(0, 10, base.shape)
    return base.clip(0, 255).astype(np.uint8)


def _make_photos(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        fmt = "png" if i % 2 else "jpg"
        Image.fromarray(_photo(rng)).save(folder / f"photo_{i}.{fmt}")
    return folder


def _env(torch_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # One thread per process: on 2 busy cores, torch's default thread pool makes each tiny
    # step take seconds instead of milliseconds.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TORCH_HOME=str(torch_home),
               PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


class Run:
    """A trainer subprocess with stdout/stderr in files (no pipe can fill up and block it)."""

    def __init__(self, args: list[str], out: Path, torch_home: Path,
                 launcher: list[str] | None = None) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.stdout_path = out.parent / f"{out.name}.stdout"
        self.stderr_path = out.parent / f"{out.name}.stderr"
        cmd = [*(launcher or [sys.executable]), "-m", "core.train", "--out", str(out), *args]
        with open(self.stdout_path, "wb") as so, open(self.stderr_path, "wb") as se:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(torch_home), stdout=so,
                                         stderr=se)
        self.code: int | None = None

    def wait(self, timeout: float = TIMEOUT) -> Run:
        try:
            self.code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"trainer did not finish within {timeout} s\n{self.report()}")
        return self

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def report(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def expect(self, code: int) -> Run:
        assert self.code == code, self.report()
        return self


def _logged_step(log: Path) -> bool:
    return log.is_file() and any(
        line.startswith("step ") for line in log.read_text(errors="replace").splitlines()
    )


def _logged_lrs(out: Path) -> list[str]:
    """The ``lr=`` field of each step line of a run's log.txt, in order."""
    return [line.split()[-1] for line in (out / "log.txt").read_text().splitlines()
            if line.startswith("step ")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def _inpaint_check(inpainter: Inpainter) -> None:
    image = _photo(np.random.default_rng(7), 40, 56)
    hole = np.zeros(image.shape[:2], dtype=bool)
    hole[10:25, 20:40] = True
    result = inpainter.inpaint(image, hole)
    assert result.composite.shape == image.shape and result.composite.dtype == np.uint8
    assert np.array_equal(result.composite[~hole], image[~hole])


# -- the runs -------------------------------------------------------------------------------
# Every trainer run the tests look at, by name. The independent ones start together when the
# module's first test asks for a run; those in DEPENDS start once the run they build on has
# finished. Only runs needed by the selected tests start at all (see NEEDS).
def _spec(name: str, d: dict[str, Path], runs: Runs) -> Run:
    data, home, base = str(d["data"]), d["torch_home"], d["base"]
    plain = [*TINY, "--data", data, "--perceptual", "none"]
    if name == "base":  # 3 steps, validation every 2, fp16 export; shared by several tests
        # channels_last as the GPU recipe trains (scripts/gpu_train.sh): the checkpoint and the
        # safetensors export must still load into an ordinary model.
        return Run([*plain, "--val-data", str(d["val"]), "--max-steps", "3",
                    "--val-every", "2", "--log-every", "1", "--work-size", "64",
                    "--channels-last", "--export", str(base / "export.safetensors")],
                   base / name, home)
    if name in ("SIGINT", "SIGTERM"):
        return Run([*plain, "--max-steps", "1000000", "--log-every", "1", "--save-every", "0",
                    "--val-every", "0"], base / name, home)
    if name == "nan":
        # Step 3 is neither logged nor saved, so its NaN is caught the deferred way (after
        # step 4 was queued), and must still be reported as step 3's with step 2 kept.
        return Run([*plain, "--max-steps", "10", "--save-every", "2", "--fail-at-step", "3",
                    "--log-every", "4", "--hole-weights", "0,0,1,1,1,1"], base / name, home)
    if name == "vgg":  # the default --perceptual vgg16, with an empty TORCH_HOME
        return Run([*TINY, "--data", data, "--max-steps", "3"], base / name, home)
    if name == "effnet":
        return Run([*TINY, "--data", data, "--perceptual", "effnet-lite0", "--max-steps", "2",
                    "--log-every", "1"], base / name, home)
    if name == "broken":
        # Two photos, one of them garbage, 6 draws: the broken one is drawn (deterministic
        # with the fixed seed; the test checks the warning).
        folder = base / "broken_data"
        folder.mkdir()
        shutil.copy(d["data"] / "photo_1.png", folder / "good.png")
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg " * 20)
        return Run([*TINY, "--data", str(folder), "--perceptual", "none", "--max-steps", "3"],
                   base / name, home)
    if name == "missing":
        return Run([*TINY, "--data", str(base / "nope"), "--perceptual", "none"],
                   base / name, home)
    if name in ("eager", "compiled"):  # the same 3 steps, the second through torch.compile
        extra = ["--compile"] if name == "compiled" else []
        return Run([*plain, "--max-steps", "3", "--log-every", "1", *extra], base / name, home)
    if name == "ddp":
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
        return Run([*plain, "--max-steps", "3"], base / name, home, launcher=launcher)
    if name == "resume":  # the NaN run's step-2 checkpoint, in a copy of its run folder
        # Without the run's --image-size, --layers, --width, --batch-size, --perceptual and
        # --hole-weights: the checkpoint supplies them (VGG weights would stop it here).
        out = base / name
        shutil.copytree(runs.done("nan").expect(1).out, out)
        return Run(["--workers", "0", "--device", "cpu", "--data", data,
                    "--resume", str(out / "latest.pt"), "--max-steps", "5",
                    "--lr", "1e-4", "--log-every", "1", "--lr-warmup", "2"], out, home)
    if name == "finetune":
        init = runs.done("base").expect(0).out / "latest.pt"
        return Run([*plain, "--max-steps", "2", "--init", str(init), "--finetune",
                    "--val-data", str(d["val"]), "--val-every", "2", "--mask-reuse", "3",
                    "--lr-schedule", "cosine", "--log-every", "1"],
                   base / name, home)
    raise KeyError(name)


DEPENDS = {"resume": "nan", "finetune": "base"}
NEEDS = {
    "test_signals_save_a_loadable_checkpoint": ("SIGINT", "SIGTERM"),
    "test_train_writes_checkpoint_that_inference_loads": ("base",),
    "test_validation_outputs": ("base",),
    "test_resume_continues_step_and_optimizer": ("resume",),
    "test_resume_from_weights_only_is_one_line": ("base",),
    "test_finetune_freezes_encoder_bn": ("finetune",),
    "test_nan_loss_stops_and_keeps_last_good_checkpoint": ("nan",),
    "test_vgg_without_weights_stops_at_once": ("vgg",),
    "test_effnet_lite0_perceptual_runs": ("effnet",),
    "test_broken_image_is_skipped": ("broken",),
    "test_missing_data_folder_is_one_line": ("missing",),
    "test_ddp_two_cpu_processes": ("ddp",),
    "test_compiled_training_matches_eager": ("eager", "compiled"),
}


class Runs:
    """The trainer runs of this module, started on demand (see the comment above _spec)."""

    def __init__(self, dirs: dict[str, Path], wanted: set[str]) -> None:
        self.dirs = dirs
        self.wanted = wanted | {DEPENDS[n] for n in wanted if n in DEPENDS}
        self.started: dict[str, Run] = {}
        self.lock = threading.RLock()
        self.launched = False
        self.closed = False

    def _start(self, name: str) -> Run:
        with self.lock:
            if name not in self.started:
                self.started[name] = _spec(name, self.dirs, self)
            return self.started[name]

    def _launch(self) -> None:
        """Start every wanted run now, or as soon as the run it builds on has finished."""
        with self.lock:
            if self.launched:
                return
            self.launched = True
            firsts = set(DEPENDS.values())
            for name in sorted(self.wanted - set(DEPENDS), key=lambda n: (n not in firsts, n)):
                self._start(name)
            for name in sorted(self.wanted & set(DEPENDS)):
                threading.Thread(target=self._start_after, args=(name,), daemon=True).start()

    def _start_after(self, name: str) -> None:
        try:
            self.started[DEPENDS[name]].proc.wait()
            with self.lock:
                if not self.closed:
                    self._start(name)
        except BaseException:  # noqa: BLE001 - get() starts it again and reports the failure
            pass

    def get(self, name: str) -> Run:
        """The run (started if it was not yet)."""
        self._launch()
        if name in DEPENDS:
            self.done(DEPENDS[name])
        return self._start(name)

    def done(self, name: str, timeout: float = TIMEOUT) -> Run:
        run = self.get(name)
        return run if run.code is not None else run.wait(timeout)

    def close(self) -> None:
        with self.lock:
            self.closed = True
        for run in self.started.values():  # e.g. a signal run whose test was deselected
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("train")
    dirs = {"base": base, "data": _make_photos(base / "data", 6, seed=0),
            "val": _make_photos(base / "val", 2, seed=1), "torch_home": base / "torch_home"}
    dirs["torch_home"].mkdir()  # empty: no cached backbone weights, and nothing downloads
    here = request.module.__name__
    selected = {item.originalname for item in request.session.items
                if getattr(item, "module", None) is not None and item.module.__name__ == here}
    wanted = {name for test in selected for name in NEEDS.get(test, ())}
    pool = Runs(dirs, wanted)
    yield pool
    pool.close()


# -- tests ----------------------------------------------------------------------------------
def test_signals_save_a_loadable_checkpoint(runs: Runs) -> None:
    # First in the file: these runs train until signalled, so signal them as soon as possible.
    pair = {sig: runs.get(sig.name) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Signal each run as soon as its log shows a trained step (it trains on until then).
    waiting = dict(pair)
    deadline = time.monotonic() + TIMEOUT
    while waiting:
        for sig, run in list(waiting.items()):
            if _logged_step(run.out / "log.txt"):
                run.proc.send_signal(sig)
                del waiting[sig]
            elif run.proc.poll() is not None:
                pytest.fail(f"trainer exited before logging a step\n{run.report()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no step logged within {TIMEOUT} s (runs are killed at teardown)")
        time.sleep(0.05)
    for sig, run in pair.items():
        run.wait(timeout=60).expect(128 + int(sig))
        assert f"interrupted by signal {int(sig)}" in run.stdout, run.report()
        _model, payload = model_from_checkpoint(run.out / "latest.pt")
        assert payload["step"] >= 1
        assert "optimizer" in payload


def test_train_writes_checkpoint_that_inference_loads(runs: Runs) -> None:
    run = runs.done("base").expect(0)
    latest = run.out / "latest.pt"
    payload = load_checkpoint(latest)
    assert payload["step"] == 3
    assert payload["model_config"]["layers"] == 4 and payload["model_config"]["width"] == 8
    assert "effective batch 2" in run.stdout
    log = (run.out / "log.txt").read_text()
    assert [ln.split()[1] for ln in log.splitlines() if ln.startswith("step ")] == ["1", "2", "3"]

    inpainter = Inpainter.from_checkpoint(latest, device="cpu")
    assert inpainter.work_size == 64
    _inpaint_check(inpainter)

    export = runs.dirs["base"] / "export.safetensors"
    assert export.is_file()
    best = load_checkpoint(run.out / "best.pt")
    assert f"exported best.pt (step {best['step']}, val PSNR {best['best_psnr']:.4f})" \
        in run.stdout, run.report()
    exported = Inpainter.from_checkpoint(export, device="cpu")
    assert exported.work_size == 64
    assert next(exported.model.parameters()).dtype == torch.float32  # fp16 file, fp32 model
    _inpaint_check(exported)


def test_validation_outputs(runs: Runs) -> None:
    out = runs.done("base").expect(0).out
    grid_path = out / "samples" / "step_0000002.png"
    assert grid_path.is_file()
    with Image.open(grid_path) as grid:
        # 5 tiles wide (input, mask, raw, composite, truth); 2 photos x 2 masks = 4 rows.
        assert grid.size == (5 * 32, 4 * 32)
    assert (out / "best.pt").is_file()
    best = load_checkpoint(out / "best.pt")
    assert best["step"] in (2, 3) and math.isfinite(best["best_psnr"])
    assert (out / "tensorboard").is_dir() and any((out / "tensorboard").iterdir())
    log = (out / "log.txt").read_text()
    assert any(ln.startswith("val step 2 psnr=") for ln in log.splitlines()), log


def test_resume_continues_step_and_optimizer(runs: Runs) -> None:
    # What a user does after a NaN stop: resume from the last good checkpoint (step 2, which
    # never validated, so it holds no best PSNR) with a lower --lr, to --max-steps 5.
    before = load_checkpoint(runs.done("nan").expect(1).out / "latest.pt")
    assert before["step"] == 2
    run = runs.done("resume").expect(0)
    payload = load_checkpoint(run.out / "latest.pt")
    assert payload["step"] == 5
    state = payload["optimizer"]["state"]
    assert state and len(state) == len(before["optimizer"]["state"])
    # Adam's per-parameter step counts carried on from 2: a fresh optimizer would say 3.
    assert {float(s["step"]) for s in state.values()} == {5.0}
    assert [g["lr"] for g in payload["optimizer"]["param_groups"]] == [1e-4]
    assert not torch.equal(payload["model"]["encoder.0.conv.weight"],
                           before["model"]["encoder.0.conv.weight"])
    assert _all_finite(payload["model"])
    steps = [ln.split()[1] for ln in (run.out / "log.txt").read_text().splitlines()
             if ln.startswith("step ")]
    # The NaN run logged nothing (it logged every 4 steps and stopped at step 4 on step 3's
    # NaN); the resumed run logs steps 3-5.
    assert steps == ["3", "4", "5"], run.report()
    # --lr-warmup 2: half the rate, then the full rate
    assert _logged_lrs(run.out) == ["lr=5e-05", "lr=0.0001", "lr=0.0001"], run.report()
    assert "schedule starts again from step 2" in run.stderr, run.report()
    assert "done (max steps reached): step 5," in run.stdout, run.report()
    assert (f"resuming {run.out / 'latest.pt'} (step 2), writing to {run.out}, with the run's "
            "settings: --image-size 32 --batch-size 2 --perceptual none --hole-weights "
            "0,0,1,1,1,1") in run.stdout, run.report()
    saved = payload["train_config"]
    assert (saved["image_size"], saved["batch_size"], saved["perceptual"]) == (32, 2, "none")
    assert tuple(saved["hole_weights"]) == (0, 0, 1, 1, 1, 1) and saved["lr"] == 1e-4
    assert payload["max_hole_radius"] == before["max_hole_radius"]
    assert "given" not in saved


def test_resume_from_weights_only_is_one_line(runs: Runs, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    import core.train as train

    export = runs.done("base").expect(0).out.parent / "export.safetensors"
    with pytest.raises(SystemExit) as stop:
        train.main([*TINY, "--data", str(tmp_path), "--perceptual", "none", "--resume",
                    str(export), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert err[0] == (f"error: --resume {export} holds weights only; start a new run from "
                      f"them with --init {export}")


def test_finetune_freezes_encoder_bn(runs: Runs) -> None:
    before = load_checkpoint(runs.done("base").expect(0).out / "latest.pt")["model"]
    run = runs.done("finetune").expect(0)
    assert "fine-tune" in run.stdout and "lr 5e-05" in run.stdout
    after = load_checkpoint(run.out / "latest.pt")
    assert after["step"] == 2  # --init starts a new run from the weights
    # The starting weights are validated too, so best.pt can never be worse than them.
    vals = [ln.split()[2] for ln in (run.out / "log.txt").read_text().splitlines()
            if ln.startswith("val step ")]
    assert vals == ["0", "2"], run.report()
    enc = [k for k in before if k.startswith("encoder_bn.")]
    dec = [k for k in before if k.startswith("decoder_bn.")]
    assert any(k.endswith("running_mean") for k in enc) and any(k.endswith("weight") for k in enc)
    for key in enc:
        assert torch.equal(after["model"][key], before[key]), key
    for suffix in ("running_mean", "running_var", "weight", "bias"):
        changed = [k for k in dec if k.endswith(suffix)
                   and not torch.equal(after["model"][k], before[k])]
        assert changed, f"no decoder BN {suffix} changed"
    assert not torch.equal(after["model"]["encoder.1.conv.weight"],
                           before["encoder.1.conv.weight"])
    # The cosine schedule over 2 steps: step 1 at the full 5e-5, step 2 halfway down.
    assert _logged_lrs(run.out) == ["lr=5e-05", "lr=2.5e-05"], run.report()
    assert [g["lr"] for g in after["optimizer"]["param_groups"]] == [2.5e-05]
    assert "lr 5e-05 (cosine to 0)" in run.stdout


def test_cosine_schedule_ends_at_the_floor() -> None:
    cfg = TrainConfig(lr=2e-4, lr_schedule="cosine", lr_floor=1e-5)
    rates = [scheduled_lr(cfg, p) for p in (-0.5, 0.0, 0.25, 0.5, 1.0, 3.0)]
    assert rates[0] == rates[1] == pytest.approx(2e-4)
    assert rates[2] == pytest.approx(1e-5 + 1.9e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert rates[3] == pytest.approx(1.05e-4)
    assert rates[4] == rates[5] == pytest.approx(1e-5)
    assert all(a > b for a, b in zip(rates[1:5], rates[2:5]))
    assert scheduled_lr(TrainConfig(lr=2e-4), 0.9) == 2e-4  # constant by default
    warm = TrainConfig(lr=2e-4, lr_warmup=4)
    assert [scheduled_lr(warm, 0.5, s) for s in range(6)] == pytest.approx(
        [5e-5, 1e-4, 1.5e-4, 2e-4, 2e-4, 2e-4])
    warm.lr_schedule = "cosine"
    assert scheduled_lr(warm, 0.5, 1) == pytest.approx(1e-4 * 0.5)


def test_budget_reports_the_share_of_max_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The time-based progress the cosine schedule follows in GPU runs (--max-minutes)."""
    import types

    import core.train as train

    now = [1000.0]
    monkeypatch.setattr(train.time, "time", lambda: now[0])
    trainer = types.SimpleNamespace(stop_signal=None, cfg=TrainConfig(max_minutes=2.0),
                                    ddp=train.Dist())
    assert train.Trainer._budget(trainer, 1000.0) == (False, 0.0)
    now[0] = 1030.0
    assert train.Trainer._budget(trainer, 1000.0) == (False, pytest.approx(0.25))
    now[0] = 1120.0
    assert train.Trainer._budget(trainer, 1000.0) == (True, pytest.approx(1.0))
    trainer.cfg = TrainConfig(max_minutes=None)  # steps only: no time share
    assert train.Trainer._budget(trainer, 0.0) == (False, 0.0)
    trainer.stop_signal = 15
    assert train.Trainer._budget(trainer, 0.0) == (True, 0.0)


def test_lr_floor_above_the_rate_is_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--data", "x", "--lr-floor", "3e-4"])
    assert exc.value.code == 2
    assert "--lr-floor must be between 0 and the learning rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--max-minutes", "0"])
    assert "--max-minutes must be positive" in capsys.readouterr().err


def test_nan_loss_stops_and_keeps_last_good_checkpoint(runs: Runs) -> None:
    run = runs.done("nan").expect(1)
    err = run.stderr
    assert "'hole' became NaN/inf at step 3;" in err, run.report()
    assert "last good checkpoint (step 2)" in err.lower(), run.report()
    assert sum(ln.startswith("error:") for ln in err.splitlines()) == 1, run.report()
    assert "Traceback" not in err
    payload = load_checkpoint(run.out / "latest.pt")
    assert payload["step"] == 2
    assert _all_finite(payload["model"])
    model_from_checkpoint(run.out / "latest.pt")  # which also refuses non-finite weights


def test_vgg_without_weights_stops_at_once(runs: Runs) -> None:
    # Standalone this run takes ~8 s, nearly all of it imports: the download fails at once
    # (no network), and --data is never read.
    run = runs.done("vgg").expect(2)
    err = run.stderr
    assert "--vgg-weights" in err and "vgg16-397923af.pth" in err, run.report()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, run.report()
    assert not (run.out / "latest.pt").exists()
    assert not any(runs.dirs["torch_home"].rglob("*.pth"))  # no partial download left


def test_effnet_lite0_perceptual_runs(runs: Runs) -> None:
    run = runs.done("effnet").expect(0)
    assert "perceptual effnet-lite0" in run.stdout
    assert load_checkpoint(run.out / "latest.pt")["step"] == 2
    lines = [ln for ln in (run.out / "log.txt").read_text().splitlines()
             if ln.startswith("step ")]
    assert len(lines) == 2
    values = dict(kv.split("=") for kv in lines[0].split()[2:])
    assert float(values["perceptual"]) > 0 and float(values["style_out"]) > 0


def test_broken_image_is_skipped(runs: Runs) -> None:
    run = runs.done("broken").expect(0)
    assert "skipping unreadable image" in run.stderr and "broken.jpg" in run.stderr, run.report()
    assert load_checkpoint(run.out / "latest.pt")["step"] == 3


def test_missing_data_folder_is_one_line(runs: Runs) -> None:
    run = runs.done("missing").expect(2)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0] and "not found" in lines[0], run.report()
    assert not run.out.exists()


def test_ddp_two_cpu_processes(runs: Runs) -> None:
    run = runs.done("ddp").expect(0)
    assert "batch 2 x 2 process(es) = effective batch 4" in run.stdout, run.report()
    assert run.stdout.count("done (max steps reached)") == 1, run.report()
    assert sorted(p.name for p in run.out.glob("*.pt")) == ["latest.pt"]
    payload = load_checkpoint(run.out / "latest.pt")
    assert payload["step"] == 3
    assert not any(k.startswith("module.") for k in payload["model"])
    assert _all_finite(payload["model"])


def test_compiled_training_matches_eager(runs: Runs) -> None:
    """--compile (what a GPU run may use to fuse the elementwise work): the same losses as the
    eager steps, a checkpoint of the plain model, and a log line saying it compiled."""
    eager, compiled = runs.done("eager").expect(0), runs.done("compiled").expect(0)
    line = next(ln for ln in compiled.stdout.splitlines() if ln.startswith("torch.compile:"))
    ok, total = (int(n) for n in line.split("; ")[1].split(" graph")[0].split(" of "))
    assert ok == total >= 2 and "running eagerly" not in line, line  # forward and backward
    assert "torch.compile" not in eager.stdout

    def losses(run: Run) -> list[list[float]]:
        rows = [ln.split() for ln in (run.out / "log.txt").read_text().splitlines()
                if ln.startswith("step ")]
        return [[float(f.split("=")[1]) for f in row[2:] if f.split("=")[0] in LOGGED]
                for row in rows]

    assert len(losses(compiled)) == 3
    np.testing.assert_allclose(losses(compiled), losses(eager), rtol=1e-3, atol=1e-4)
    a, b = (load_checkpoint(r.out / "latest.pt")["model"] for r in (eager, compiled))
    assert list(a) == list(b)  # the plain model's names, no compile wrapper's prefix
    # Adam moves a weight by about lr per step whatever its gradient's size, so where the
    # gradient is ~0 (the biases ahead of BatchNorm) rounding shows up to 2 lr per step. The
    # rest must agree: 99.7 % of the values within 1e-5 here.
    close = sum(int(((a[k].float() - b[k].float()).abs() <= 1e-5).sum()) for k in a)
    assert close / sum(v.numel() for v in a.values()) > 0.99
    _inpaint_check(Inpainter.from_checkpoint(compiled.out / "latest.pt", device="cpu"))


def test_a_first_compiled_step_that_fails_is_run_eagerly(tmp_path: Path, monkeypatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """A compile error in the first step's backward is not suppressed by torch: the trainer
    says so and trains eagerly instead of losing the run."""
    import core.train as train

    class Broken(torch.nn.Module):
        def forward(self, *args):
            raise RuntimeError("backward compiler failed\nmore lines")

    import torch._dynamo as dynamo

    # in this process: leave pytest's signal handlers and torch's settings as they were
    monkeypatch.setattr(train.Trainer, "_install_signals", lambda self: None)
    monkeypatch.setattr(dynamo.config, "suppress_errors", dynamo.config.suppress_errors)
    compiled = []
    monkeypatch.setattr(train.torch, "compile", lambda module: compiled.append(module) or (
        Broken() if isinstance(module, train.PConvUNet) else module))
    data = _make_photos(tmp_path / "data", 2, seed=0)
    with pytest.raises(SystemExit) as stop:
        train.main([*TINY, "--data", str(data), "--perceptual", "none", "--max-steps", "2",
                    "--out", str(tmp_path / "out"), "--compile", "--log-every", "1"])
    assert stop.value.code == 0
    err = capsys.readouterr().err
    assert "torch.compile failed at the first step (RuntimeError: backward compiler failed); " \
        "training eagerly" in err
    assert len(compiled) == 2  # the network and the loss
    assert load_checkpoint(tmp_path / "out" / "latest.pt")["step"] == 2


def test_mask_reuse_below_one_is_refused(capsys: pytest.CaptureFixture) -> None:
    assert parse_args(["--data", "x", "--mask-reuse", "4"]).mask_reuse == 4.0
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--mask-reuse", "0.5"])
    assert "--mask-reuse must be at least 1" in capsys.readouterr().err



def test_hole_weights_are_parsed_and_checked(capsys: pytest.CaptureFixture) -> None:
    cfg = parse_args(["--data", "x", "--hole-weights", "1,1,2,2,2,2"])
    assert cfg.hole_weights == (1.0, 1.0, 2.0, 2.0, 2.0, 2.0)
    assert parse_args(["--data", "x"]).hole_weights is None
    for bad, message in [("1,2", "one weight per hole bucket (6), got 2"),
                         ("a,b,c,d,e,f", "is not a comma-separated list of numbers"),
                         ("0,0,0,0,0,0", "not all zero"), ("1,1,1,1,1,-1", "non-negative")]:
        with pytest.raises(SystemExit):
            parse_args(["--data", "x", "--hole-weights", bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--hole-weights", "1,1,1,1,1,1", "--mask-dir", "m"])
    assert "not to --mask-dir" in capsys.readouterr().err


def test_hole_weights_reach_the_training_data(tmp_path: Path, monkeypatch) -> None:
    import core.train as train

    monkeypatch.setattr(train.Trainer, "_install_signals", lambda self: None)
    data = _make_photos(tmp_path / "data", 2, seed=0)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        train.main([*TINY, "--data", str(data), "--perceptual", "none", "--max-steps", "1",
                    "--out", str(out), "--hole-weights", "0,0,0,0,0,1"])
    assert stop.value.code == 0
    assert tuple(load_checkpoint(out / "latest.pt")["train_config"]["hole_weights"]) == (
        0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    trainer = train.Trainer(parse_args([*TINY, "--data", str(data), "--out", str(out / "b"),
                                        "--hole-weights", "0,0,0,0,0,1"]))
    trainer._build_data()
    assert trainer.dataset.hole_p.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def _resume_args(*extra: str) -> TrainConfig:
    return parse_args(["--data", "x", "--resume", "r", "--out", "o", *extra])


def test_resumed_settings_come_from_the_checkpoint_unless_given(
        capsys: pytest.CaptureFixture) -> None:
    from core.train import TrainingStopped, config_problem, resumed_config

    saved = {"image_size": 64, "batch_size": 8, "perceptual": "none", "finetune": True,
             "hole_weights": [1, 1, 2, 2, 2, 2], "lr_schedule": "cosine", "max_steps": 99,
             "lr_warmup": 300, "device": "cuda", "out": "elsewhere"}
    cfg = parse_args(["--data", "x", "--resume", "latest.pt", "--batch-size", "16"])
    assert "batch_size" in cfg.given and "image_size" not in cfg.given
    cfg, flags = resumed_config(cfg, saved)
    assert (cfg.image_size, cfg.batch_size, cfg.perceptual, cfg.finetune) == (64, 16, "none", True)
    assert cfg.hole_weights == (1, 1, 2, 2, 2, 2) and cfg.resolved_lr() == 5e-5
    # where and how long a run goes, and its warm-up, belong to this invocation
    assert (cfg.max_steps, cfg.lr_warmup, cfg.device, cfg.out) == (
        TrainConfig.max_steps, 0, "auto", ".")  # (the checkpoint's folder, not "elsewhere")
    assert flags == ["--image-size 64", "--lr-schedule cosine", "--finetune",
                     "--perceptual none", "--hole-weights 1,1,2,2,2,2"]
    # one mask source: --mask-dir given now drops the run's hole weights
    cfg, _ = resumed_config(_resume_args("--mask-dir", "m"), saved)
    assert cfg.mask_dir == "m" and cfg.hole_weights is None
    # a config built in code has given every setting
    cfg, flags = resumed_config(TrainConfig(data="x", resume="r"), saved)
    assert flags == [] and cfg.image_size == TrainConfig.image_size
    for bad in ({"image_size": "64"}, {"finetune": 1}, {"lr_schedule": "step"},
                {"hole_weights": ["a"]}):
        with pytest.raises(TrainingStopped, match="--resume r"):
            resumed_config(_resume_args(), bad)
    # a loss's weights belong to its backbone: switching backbone drops the run's weights
    saved["perceptual_weight"] = 0.2
    kept, _ = resumed_config(_resume_args(), saved)
    switched, _ = resumed_config(_resume_args("--perceptual", "effnet-lite0"), saved)
    assert kept.perceptual_weight == 0.2 and switched.perceptual_weight is None
    moved, _ = resumed_config(_resume_args("--backbone-weights", "w"), saved)  # file moved
    assert (moved.perceptual, moved.backbone_weights, moved.perceptual_weight) == (
        "none", "w", 0.2)
    # values are checked once the run's own are in: its lr, not the default, bounds the floor
    cfg, _ = resumed_config(_resume_args("--lr-floor", "5e-4"), {"lr": 1e-3})
    assert config_problem(cfg) is None
    cfg, _ = resumed_config(_resume_args("--lr", "5e-5"),
                            {"lr_schedule": "cosine", "lr_floor": 1e-4})
    assert "--lr-floor must be between" in config_problem(cfg)
    # a resumed run continues in its own folder unless --out says otherwise
    assert parse_args(["--data", "x", "--resume", "runs/a/latest.pt"]).out == "runs/a"
    assert parse_args(["--data", "x", "--resume", "runs/a/latest.pt", "--out", "b"]).out == "b"
    with pytest.raises(SystemExit):  # best.pt's folder may hold a later latest.pt
        parse_args(["--data", "x", "--resume", "runs/a/best.pt"])
    assert "give --out" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["file", "under_a_file", "mask_dir", "val_empty"])
def test_unusable_out_or_mask_folder_stops_at_once_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, problem: str) -> None:
    import core.train as train

    data = _make_photos(tmp_path / "data", 1, seed=0)
    (tmp_path / "afile").write_text("keep me")
    out = {"file": tmp_path / "afile", "under_a_file": tmp_path / "afile" / "run",
           "mask_dir": tmp_path / "run", "val_empty": None}[problem]
    extra = {"mask_dir": ["--mask-dir", str(tmp_path / "nope")],
             "val_empty": ["--val-data", str(tmp_path / "run")]}.get(problem, [])
    if problem == "val_empty":
        (tmp_path / "run").mkdir()
        out = tmp_path / "run" / "out"
    with pytest.raises(SystemExit) as stop:
        train.main([*TINY, "--data", str(data), "--perceptual", "none", "--out", str(out),
                    *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = {"mask_dir": f"--mask-dir {tmp_path / 'nope'}: folder not found",
                "val_empty": f"--val-data {tmp_path / 'run'}: no images found"}.get(
        problem, f"--out {out}: cannot write there (")
    assert len(err) == 1 and err[0].startswith(f"error: {expected}"), err
    assert (tmp_path / "afile").read_text() == "keep me"
    # the writability check leaves nothing behind
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.filterwarnings("ignore::core.data.BrokenImageWarning")
def test_masks_that_never_decode_stop_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import core.train as train

    data = _make_photos(tmp_path / "data", 1, seed=0)
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("a.png", "b.png"):
        (masks / name).write_bytes(b"not a png")
    with pytest.raises(SystemExit) as stop:
        train.main([*TINY, "--data", str(data), "--perceptual", "none", "--max-steps", "1",
                    "--out", str(tmp_path / "run"), "--mask-dir", str(masks)])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: --mask-dir {masks}: none of the 2 mask files could be decoded"), err
