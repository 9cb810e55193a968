"""Checkpoint files: written atomically, read without ever unpickling code.

Two formats carry the same content (model configuration inside):
- safetensors: model weights only (the shipped model, half precision), configuration in the
  metadata as JSON;
- ``torch.save`` of a dict of tensors and plain values (trainer state too),
  read back with ``torch.load(weights_only=True)``, which refuses pickled code.
The format is recognised by content, not by the file name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from core.atomic import atomic_write
from core.model import PConvUNet, PConvUNetConfig, build_model

FORMAT = "pconv-studio/1"
# Model configurations accepted from a file (2**layers is the padding multiple at inference).
MIN_LAYERS, MAX_LAYERS = 4, 12


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the one-line message names the file."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Save a trainer checkpoint dict (must hold 'model' and 'model_config') atomically."""
    payload = {"format": FORMAT, **payload}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), lambda fh: torch.save(payload, fh))


def save_model_file(
    path: str | Path,
    model: PConvUNet,
    half: bool = True,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save just the weights (fp16 by default) and config as safetensors, atomically."""
    from safetensors.torch import save

    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        tensors[name] = value.contiguous()
    metadata = {
        "format": FORMAT,
        "model_config": json.dumps(model.config.to_dict()),
        "extra": json.dumps(extra or {}),
    }
    data = save(tensors, metadata=metadata)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), lambda fh: fh.write(data))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read either format into {'model': state_dict, 'model_config': dict, ...}."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    kind = _sniff(path)
    if kind == "safetensors" or (kind != "zip" and path.suffix.lower() == ".safetensors"):
        return _load_safetensors(path)  # (a damaged one is reported by its own loader)
    if kind == "unknown":
        raise CheckpointError(
            f"{path}: not a checkpoint (neither a safetensors model file nor a PyTorch file)"
        )
    _check_zip_checksums(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it contains pickled code or objects, which are never loaded"
        raise CheckpointError(f"{path}: not a valid checkpoint ({reason[:200]})") from None
    if not isinstance(payload, dict) or "model" not in payload or "model_config" not in payload:
        raise CheckpointError(f"{path}: not a checkpoint of this project (no model/config)")
    return payload


def _sniff(path: Path) -> str:
    """'safetensors', 'zip' or 'pickle' (torch.save, new and legacy) or 'unknown', by content,
    so a renamed or upper-case file is still read the right way. Safetensors is tested first:
    its first byte is the low byte of its header length and may be anything, 0x80 included."""
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header_length = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 0 < header_length <= path.stat().st_size - 8:
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def _check_zip_checksums(path: Path) -> None:
    """torch.load does not verify the CRCs of its zip archive: flipped bytes in the tensor
    data would load as silently wrong weights. Check them (about 1 GB/s)."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy format, or not a checkpoint: torch.load reports it
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a valid checkpoint ({reason[:200]})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: checkpoint is corrupt (checksum error in {bad})")


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = path.read_bytes()
        state = load(data)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        config = json.loads(metadata["model_config"])
        extra = json.loads(metadata.get("extra", "{}"))
        if not isinstance(extra, dict):
            raise ValueError(f"its 'extra' metadata is a {type(extra).__name__}, not a mapping")
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a valid model file ({reason[:200]})") from None
    return {"format": metadata.get("format"), "model": state, "model_config": config, **extra}


def _checked_model(path: str | Path, payload: dict[str, Any]) -> PConvUNet:
    """The model the payload's configuration describes, once its weights are known to match.

    The configuration comes from the file. Before anything is built, its depth and width are
    checked against the file's own first and deepest encoder weights, so a hostile one cannot
    allocate more than the weights that are already in memory.
    """
    state = payload["model"]
    if not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"{path}: model weights are missing or not tensors")
    try:
        config = PConvUNetConfig.from_dict(dict(payload["model_config"]))
        if not MIN_LAYERS <= config.layers <= MAX_LAYERS or config.width < 1:
            raise ValueError(
                f"{config.layers} levels of width {config.width}; expected "
                f"{MIN_LAYERS}-{MAX_LAYERS} levels, width >= 1"
            )
        if config.in_channels != 3:
            raise ValueError(f"{config.in_channels} input channels; photos have 3")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad model configuration ({exc})") from None
    first = state.get("encoder.0.conv.weight")
    depth = sum(1 for k in state if k.startswith("encoder.") and k.endswith(".conv.weight"))
    if first is None or first.dim() != 4 or first.shape[0] != config.width:
        raise CheckpointError(
            f"{path}: weights do not match the model (first layer does not have "
            f"{config.width} channels)"
        )
    if depth != config.layers:
        raise CheckpointError(
            f"{path}: weights do not match the model ({depth} encoder levels, the "
            f"configuration says {config.layers})"
        )
    model = build_model(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[0]}" if missing else
                  f"unexpected {unexpected[0]}" if unexpected else
                  f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, the configuration "
                  f"needs {tuple(expected[wrong[0]].shape)}")
        raise CheckpointError(f"{path}: weights do not match the model ({detail})")
    return model


def checked_config(path: str | Path, payload: dict[str, Any]) -> PConvUNetConfig:
    """The payload's model configuration, once its weights are known to match it exactly."""
    return _checked_model(path, payload).config


def model_from_checkpoint(path: str | Path) -> tuple[PConvUNet, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights strictly."""
    payload = load_checkpoint(path)
    model = _checked_model(path, payload)
    state = payload["model"]
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])
        raise CheckpointError(f"{path}: weights do not match the model ({detail[:300]})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: weights contain NaN or inf (e.g. {bad[0]})")
    return model, payload
