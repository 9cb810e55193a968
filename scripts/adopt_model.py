"""Make a freshly trained export the shipped model, keeping the shipped file's inference
settings (the trainer's export knows only work_size and max_hole_radius); or re-tune a setting.

    python scripts/adopt_model.py runs/gpuN/pixel/model.safetensors --trained "version N: ..."
    python scripts/adopt_model.py resources/model/pconv_unet.safetensors --set max_hole_radius=32

Copies ``fill_smoothing`` and ``flip_passes`` (and anything else the trainer does not write)
from resources/model/pconv_unet.safetensors into the new file's metadata, sets ``trained``,
and replaces the shipped file atomically. Re-run the evaluation afterwards: the settings were
chosen for the old weights. ``--set KEY=VALUE`` (VALUE in JSON) sets an inference setting last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.atomic import atomic_write  # noqa: E402

SHIPPED = ROOT / "resources" / "model" / "pconv_unet.safetensors"


def read(path: Path, tensors: bool = True) -> tuple[dict, dict]:
    """The file's metadata, and its tensors unless ``tensors`` is False (header only)."""
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {}), ({k: f.get_tensor(k) for k in f.keys()}
                                           if tensors else {})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("new", type=Path, help="model file exported by core.train --export")
    p.add_argument("--trained", help="how it was trained (kept in the file); needed unless the "
                   "file has a note already")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an inference setting, VALUE in JSON (e.g. max_hole_radius=32)")
    p.add_argument("--like", type=Path, default=SHIPPED, help="file whose settings to keep")
    p.add_argument("--out", type=Path, default=SHIPPED)
    args = p.parse_args(argv)
    from core.inference import Inpainter

    try:
        meta, tensors = read(args.new)
        old_meta, _ = read(args.like, tensors=False)
        extra = json.loads(meta.get("extra", "{}"))
        kept = {k: v for k, v in json.loads(old_meta.get("extra", "{}")).items()
                if k not in extra and k != "trained"}
        extra.update(kept)
        if args.trained:
            extra["trained"] = args.trained
        elif "trained" not in extra:
            raise ValueError(f"{args.new} has no note of how it was trained: pass --trained")
        for item in args.set:
            key, sep, value = item.partition("=")
            try:
                extra[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                sep = ""
            if not sep or not key.strip():
                raise ValueError(f"--set {item!r}: use KEY=VALUE with VALUE in JSON")
        meta["extra"] = json.dumps(extra)
        data = save(tensors, metadata=meta)
        # Load the result as the app would before it replaces anything: a file that is not a
        # model of this project, or a kept setting it rejects, stops here.
        with tempfile.TemporaryDirectory() as tmp:
            trial = Path(tmp) / "trial.safetensors"
            trial.write_bytes(data)
            Inpainter.from_checkpoint(trial, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any unusable file: one line, nothing written
        print(f"error: {(str(exc).splitlines() or [type(exc).__name__])[0]}", file=sys.stderr)
        return 2
    atomic_write(args.out, lambda fh: fh.write(data))
    changed = f"; set {', '.join(args.set)}" if args.set else ""
    print(f"wrote {args.out}; kept from {args.like.name}: {', '.join(sorted(kept)) or 'nothing'}"
          f"{changed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
