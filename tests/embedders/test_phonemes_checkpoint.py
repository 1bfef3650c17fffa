"""The phoneme inventory and the checkpoint format."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from archive_search.embedders import checkpoint, phonemes
from archive_search.errors import CheckpointError


def test_encode_strips_stress_and_round_trips():
    ids = phonemes.encode(["HH", "AH0", "L", "OW1", " "])
    assert phonemes.decode(ids) == ["HH", "AH", "L", "OW"]
    assert min(ids) >= 1 and max(ids) < phonemes.VOCAB_SIZE


def test_pad_batch_pads_with_blank():
    ids, lengths = phonemes.pad_batch([[3, 4, 5], [7]])
    assert ids.tolist() == [[3, 4, 5], [7, 0, 0]]
    assert lengths.tolist() == [3, 1]


@dataclass
class ToyDims:
    width: int = 3


def test_checkpoint_round_trip_with_half_storage(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = checkpoint.save_checkpoint(tmp_path / "toy.pt", "toy", ToyDims(), model, extra={"step": 5}, half=True)
    payload = checkpoint.read_checkpoint(path, "toy")
    assert checkpoint.build_dims(ToyDims, payload["dims"]) == ToyDims()
    assert payload["extra"]["step"] == 5
    restored = torch.nn.Linear(3, 2)
    restored.load_state_dict(payload["state_dict"])
    assert torch.allclose(restored.weight, model.weight, atol=1e-3)
    assert restored.weight.dtype == torch.float32


def test_checkpoint_of_another_kind_is_refused(tmp_path):
    path = checkpoint.save_checkpoint(tmp_path / "toy.pt", "toy", ToyDims(), torch.nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match="expected 'jmcl'"):
        checkpoint.read_checkpoint(path, "jmcl")


def test_unknown_dims_fields_are_refused():
    with pytest.raises(CheckpointError, match="unknown fields"):
        checkpoint.build_dims(ToyDims, {"width": 3, "depth": 2})


def test_missing_and_garbage_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.read_checkpoint(tmp_path / "nope.pt", "toy")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.read_checkpoint(garbage, "toy")
