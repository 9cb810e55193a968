"""scripts/adopt_model.py: a new export takes over the shipped file's inference settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from core.checkpoint import save_model_file
from core.inference import Inpainter
from core.model import PConvUNet

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("adopt_model", ROOT / "scripts/adopt_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_new_weights_keep_the_old_inference_settings(tmp_path, capsys):
    torch.manual_seed(0)
    old, new = PConvUNet(layers=4, width=8), PConvUNet(layers=4, width=8)
    save_model_file(tmp_path / "old.safetensors", old,
                    extra={"work_size": 256, "fill_smoothing": [1.2, 4.0, 12], "flip_passes": 3,
                           "edge_band": 16, "trained": "old run"})
    save_model_file(tmp_path / "new.safetensors", new, extra={"work_size": 128})
    out = tmp_path / "shipped.safetensors"
    code = _script().main([str(tmp_path / "new.safetensors"), "--trained", "new run",
                           "--like", str(tmp_path / "old.safetensors"), "--out", str(out)])
    assert code == 0 and "edge_band, fill_smoothing, flip_passes" in capsys.readouterr().out
    inp = Inpainter.from_checkpoint(out, device="cpu")
    assert inp.passes == 3 and inp.fill_smoothing == (1.2, 4.0, 12.0) and inp.edge_band == 16
    assert inp.work_size == 128  # the new export's own settings win
    state = inp.model.state_dict()
    assert torch.equal(state["encoder.0.conv.weight"].float(),
                       new.state_dict()["encoder.0.conv.weight"].half().float())
    # A file that is not a model is one line on stderr, and nothing is written.
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    code = _script().main([str(tmp_path / "junk.safetensors"), "--trained", "x",
                           "--like", str(tmp_path / "old.safetensors"),
                           "--out", str(tmp_path / "none.safetensors")])
    assert code == 2 and not (tmp_path / "none.safetensors").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # Readable safetensors that is not a model of this project: refused the same way.
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    code = _script().main([str(tmp_path / "other.safetensors"), "--trained", "x",
                           "--like", str(tmp_path / "old.safetensors"),
                           "--out", str(tmp_path / "none.safetensors")])
    assert code == 2 and not (tmp_path / "none.safetensors").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_setting_is_re_tuned_in_place(tmp_path, capsys):
    """--set changes one inference setting of a file and keeps its weights and note; a value the
    app would refuse, or a fresh export without a note, is one line and nothing written."""
    torch.manual_seed(0)
    model = PConvUNet(layers=4, width=8)
    path = tmp_path / "shipped.safetensors"
    save_model_file(path, model, extra={"work_size": 256, "max_hole_radius": 20,
                                        "flip_passes": 3, "trained": "run 3"})
    code = _script().main([str(path), "--like", str(path), "--out", str(path),
                           "--set", "max_hole_radius=32"])
    assert code == 0 and "set max_hole_radius=32" in capsys.readouterr().out
    inp = Inpainter.from_checkpoint(path, device="cpu")
    assert inp.max_hole_radius == 32 and inp.passes == 3 and inp.work_size == 256
    from core.checkpoint import model_from_checkpoint

    assert model_from_checkpoint(path)[1]["trained"] == "run 3"
    before = path.read_bytes()
    for bad in ("max_hole_radius=-3", "max_hole_radius", "=4", "flip_passes=[1"):
        code = _script().main([str(path), "--like", str(path), "--out", str(path),
                               "--set", bad])
        assert code == 2 and path.read_bytes() == before, bad
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    fresh = tmp_path / "fresh.safetensors"
    save_model_file(fresh, model, extra={"work_size": 128})
    code = _script().main([str(fresh), "--like", str(path), "--out", str(tmp_path / "x.st")])
    assert code == 2 and not (tmp_path / "x.st").exists()
    assert "--trained" in capsys.readouterr().err
