"""One checkpoint format for every model: dims, feature config, state_dict, format version.

Checkpoints hold only tensors and plain Python values so that they load with
`torch.load(weights_only=True)`: a checkpoint can never run code on load.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from archive_search.errors import CheckpointError

FORMAT_VERSION = 1

DimsT = TypeVar("DimsT")


def save_checkpoint(
    path: str | Path,
    kind: str,
    dims: Any,
    model: torch.nn.Module,
    extra: dict | None = None,
    half: bool = False,
) -> Path:
    """Write `model` with its dims dataclass atomically (temp file, fsync, rename).

    kind: the model family ("jmcl", "ctc", "kws"), checked on load. extra: plain values
    (training step, metrics, data description). half: store float tensors as float16 to keep
    shipped files small; they are cast back to float32 on load.
    """
    state = {
        name: (tensor.detach().half() if half and tensor.is_floating_point() else tensor.detach()).cpu()
        for name, tensor in model.state_dict().items()
    }
    payload = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "dims": dataclasses.asdict(dims),
        "state_dict": state,
        "extra": extra or {},
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(payload: Any, path: str | Path) -> Path:
    """torch.save to a temporary file, fsync, then rename: a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def read_checkpoint(path: str | Path, kind: str) -> dict:
    """Load a checkpoint's payload safely and check its format version and model family."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else None
        raise CheckpointError(f"{path}: checkpoint format version {found!r}, expected {FORMAT_VERSION}")
    if payload.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {payload.get('kind')!r} model, expected {kind!r}")
    payload["state_dict"] = {
        name: tensor.float() if tensor.is_floating_point() else tensor
        for name, tensor in payload["state_dict"].items()
    }
    return payload


def build_dims(dims_class: type[DimsT], values: dict) -> DimsT:
    """Rebuild a dims dataclass from a checkpoint, refusing unknown fields."""
    known = {field.name for field in dataclasses.fields(dims_class)}
    unknown = set(values) - known
    if unknown:
        raise CheckpointError(f"checkpoint dims have unknown fields {sorted(unknown)} for {dims_class.__name__}")
    return dims_class(**values)
