import errno
import os

import faiss
import numpy as np
import pytest

from archive_search.errors import IndexCorruptError
from archive_search.storage import vectors as vectors_module
from archive_search.storage.vectors import VECTOR_BUDGET_BYTES_PER_HOUR, VectorIndex, choose_kind, windows_per_hour


def unit(n, dim, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_add_search_remove_round_trip():
    index = VectorIndex(16)
    x = unit(50, 16)
    index.add(np.arange(1000, 1050), x)
    result = index.search(x[7], 3)[0]
    assert result.ids[0] == 1007 and result.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert index.remove(np.arange(1000, 1010)) == 10
    assert sorted(index.ids().tolist()) == list(range(1010, 1050))
    assert 1007 not in index.search(x[7], 50)[0].ids
    np.testing.assert_allclose(index.vectors(np.array([1020])), x[20:21], atol=1e-6)


def test_save_and_load(tmp_path):
    index = VectorIndex(8)
    x = unit(20, 8)
    index.add(np.arange(20) + 5, x)
    index.save(tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss", 8, "Flat")
    assert sorted(loaded.ids().tolist()) == list(range(5, 25))
    assert loaded.search(x[3], 1)[0].ids[0] == 8
    with pytest.raises(IndexCorruptError, match="dimension"):
        VectorIndex.load(tmp_path / "v.faiss", 9, "Flat")
    (tmp_path / "bad.faiss").write_bytes(b"not an index")
    with pytest.raises(IndexCorruptError, match="bad.faiss"):
        VectorIndex.load(tmp_path / "bad.faiss", 8, "Flat")


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    index = VectorIndex(8)
    index.add(np.arange(3), unit(3, 8))
    target = tmp_path / "v.faiss"
    index.save(target)
    before = target.read_bytes()
    index.add(np.arange(3, 10), unit(7, 8, seed=1))

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vectors_module.os, "fsync", disk_full)
    with pytest.raises(OSError):
        index.save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.faiss"]  # no temp file left behind
    assert VectorIndex.load(target, 8, "Flat").ntotal == 3


@pytest.mark.parametrize("dim", [32, 64, 128, 256, 512, 1024])
def test_index_kind_rule_keeps_vectors_within_budget(dim):
    bytes_per_dim = {"Flat": 4, "SQfp16": 2, "SQ8": 1, "SQ4": 0.5}
    large = choose_kind(500_000, dim)
    size = bytes_per_dim[large] * dim if large in bytes_per_dim else int(large[2:])  # PQm: m bytes
    assert size * windows_per_hour() <= VECTOR_BUDGET_BYTES_PER_HOUR
    small = choose_kind(100, dim)
    assert small in ("Flat", "SQfp16")  # exact (float32 or float16) below the quantization threshold
    assert choose_kind(5_000_000, dim).startswith("IVF,")


def test_migration_to_quantized_and_ivf_keeps_neighbours(monkeypatch):
    monkeypatch.setattr(vectors_module, "QUANTIZE_MIN_VECTORS", 500)
    monkeypatch.setattr(vectors_module, "IVF_MIN_VECTORS", 3000)
    dim = 512  # needs SQ4 under the budget
    index = VectorIndex(dim)
    x = unit(1000, dim)
    index.add(np.arange(1000), x)
    assert index.maybe_migrate() and index.kind == "SQ4"
    hits = index.search(x[:20], 1)
    assert [h.ids[0] for h in hits] == list(range(20))
    index.add(np.arange(1000, 4000), unit(3000, dim, seed=2))
    assert index.maybe_migrate() and index.kind == "IVF,SQ4"
    assert index.ntotal == 4000 and isinstance(faiss.extract_index_ivf(index.index), faiss.IndexIVF)
    assert index.remove(np.arange(0, 10)) == 10 and index.ntotal == 3990
    assert sorted(index.ids().tolist()) == list(range(10, 4000))
    hits = index.search(x[10:30], 1)
    assert sum(h.ids[0] == i for h, i in zip(hits, range(10, 30))) >= 18  # IVF is approximate
