"""Sharded FAISS index: the IVF switch, sealing without rewriting old shards, merged search,
recall against exact search, crash-safe loading, and indexes saved before shards."""

import os

import faiss
import numpy as np
import pytest

from archive_search import Archive
from archive_search.storage import vectors as vectors_module
from archive_search.storage.store import Store
from archive_search.storage.vectors import IVF_MIN_VECTORS, ShardedIndex, VectorIndex, choose_kind, shard_files
from tests.fakes import FakeTranscriber, fake_bundle, lexicon, write_episodes

DIM = 16
PER_HOUR = 1000.0  # vectors per "audio hour" in these tests


def unit(n, dim=DIM, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n, dim=DIM, clusters=50, spread=0.3, seed=0):
    """Random unit vectors around random unit centres (speech windows cluster; uniform noise does not)."""
    rng = np.random.default_rng(seed)
    centres = unit(clusters, dim, seed + 1)
    noise = rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    x = centres[rng.integers(clusters, size=n)] + spread * noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(x, queries, k):
    return np.argsort(-(queries @ x.T), axis=1)[:, :k]


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 3 'hours' (3,000 vectors), quantizing from 500 vectors and IVF from 2,000."""
    monkeypatch.setattr(vectors_module, "SHARD_HOURS", 3.0)
    monkeypatch.setattr(vectors_module, "QUANTIZE_MIN_VECTORS", 500)
    monkeypatch.setattr(vectors_module, "IVF_MIN_VECTORS", 2_000)


def test_ivf_switch_threshold():
    assert not choose_kind(IVF_MIN_VECTORS - 1, 256).startswith("IVF")
    assert choose_kind(IVF_MIN_VECTORS, 256) == "IVF,SQ8"  # IVF with scalar quantization
    assert choose_kind(IVF_MIN_VECTORS, 1024).startswith("IVF,PQ")


def test_open_shard_is_sealed_at_shard_hours(small_shards):
    index = ShardedIndex(DIM)
    x = clustered(3_500)
    index.add(np.arange(1, 2_901), x[:2_900])
    index.maybe_migrate(PER_HOUR)
    assert not index.sealed and index.kind.startswith("IVF")  # past IVF_MIN_VECTORS, not yet a shard
    index.add(np.arange(2_901, 3_501), x[2_900:])
    assert index.maybe_migrate(PER_HOUR)
    assert len(index.sealed) == 1 and index.sealed[0][0] == 3_500 and index.open.ntotal == 0
    assert index.sealed[0][1].kind.startswith("IVF") and index.ntotal == 3_500


def test_adding_rewrites_only_the_open_shard(tmp_path, small_shards):
    path = tmp_path / "vectors.faiss"
    index = ShardedIndex(DIM)
    x = clustered(4_000)
    index.add(np.arange(1, 3_001), x[:3_000])
    index.maybe_migrate(PER_HOUR)
    index.save(path)
    (sealed_file,) = shard_files(path)
    before = sealed_file.stat().st_mtime_ns, sealed_file.stat().st_ino
    index.add(np.arange(3_001, 4_001), x[3_000:])
    index.maybe_migrate(PER_HOUR)
    index.save(path)
    assert (sealed_file.stat().st_mtime_ns, sealed_file.stat().st_ino) == before  # untouched
    assert index.remove(np.array([10, 3_500])) == 2
    index.save(path)
    assert sealed_file.stat().st_ino != before[1]  # a removal rewrites the shard that held the id
    loaded = ShardedIndex.load(path, DIM, index.kind, index.trained_at)
    assert sorted(loaded.ids().tolist()) == sorted(set(range(1, 4_001)) - {10, 3_500})


def test_merged_search_equals_exact_search(small_shards):
    index = ShardedIndex(DIM)
    x = clustered(7_000, seed=3)
    for first in range(0, 7_000, 1_000):  # three sealed shards and an open one
        index.add(np.arange(first, first + 1_000) + 1, x[first : first + 1_000])
        index.maybe_migrate(PER_HOUR)
    assert len(index.sealed) == 2 and index.open.ntotal == 1_000
    for _, shard in index.sealed:  # every list probed: IVF,Flat is then exact
        shard.index.nprobe = faiss.extract_index_ivf(shard.index).nlist
    queries = unit(20, seed=9)
    results = index.search(queries, 10)
    truth = exact_top(x, queries, 10) + 1
    for result, expected, query in zip(results, truth, queries):
        assert result.ids.tolist() == expected.tolist()
        np.testing.assert_allclose(result.scores, x[expected - 1] @ query, atol=1e-5)


def test_ivf_recall_against_exact_search(small_shards):
    x = clustered(20_000, seed=5)
    index = ShardedIndex(DIM)
    for first in range(0, 20_000, 2_500):
        index.add(np.arange(first, first + 2_500), x[first : first + 2_500])
        index.maybe_migrate(PER_HOUR)
    assert len(index.sealed) == 4
    queries = clustered(100, seed=11)
    found = index.search(queries, 10)
    truth = exact_top(x, queries, 10)
    recall = np.mean([len(set(r.ids.tolist()) & set(t.tolist())) / 10 for r, t in zip(found, truth)])
    assert recall >= 0.9


def test_load_after_a_save_stopped_between_shard_and_open_file(tmp_path, small_shards):
    path = tmp_path / "vectors.faiss"
    index = ShardedIndex(DIM)
    index.add(np.arange(1, 2_801), clustered(2_800))
    index.maybe_migrate(PER_HOUR)
    index.save(path)
    old_open = path.read_bytes()
    index.add(np.arange(2_801, 3_101), clustered(300, seed=1))
    index.maybe_migrate(PER_HOUR)
    index.save(path)
    path.write_bytes(old_open)  # as if killed after the sealed shard, before the open shard
    loaded = ShardedIndex.load(path, DIM, "IVF,Flat")
    ids = loaded.ids()
    assert len(ids) == len(set(ids.tolist())) == 3_100  # the sealed copy only, no duplicates


def test_index_saved_before_shards_loads_as_the_open_shard(tmp_path):
    old = VectorIndex(DIM)
    x = unit(300)
    old.add(np.arange(300) + 7, x)
    old.save(tmp_path / "vectors.faiss")
    loaded = ShardedIndex.load(tmp_path / "vectors.faiss", DIM, "Flat")
    assert not loaded.sealed and sorted(loaded.ids().tolist()) == list(range(7, 307))
    assert loaded.search(x[5], 1)[0].ids[0] == 12


def test_store_with_shards_stays_consistent_across_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors_module, "SHARD_HOURS", 0.01)  # about 400 windows per shard
    monkeypatch.setattr(vectors_module, "QUANTIZE_MIN_VECTORS", 100)
    monkeypatch.setattr(vectors_module, "IVF_MIN_VECTORS", 300)
    folder = tmp_path / "audio"
    archive = Archive.open(tmp_path / "index", fake_bundle(lexicon(), transcriber=FakeTranscriber()))
    truth = write_episodes(folder / "first", count=6, words_per_episode=8)
    assert archive.add(folder).ok  # sealed into the first shard at the end of the run
    with Store.open(tmp_path / "index") as store:
        (first_shard,) = shard_files(store.vectors_path)
        sealed_at = first_shard.stat().st_mtime_ns
    write_episodes(folder / "second", count=6, words_per_episode=8)
    second = archive.add(folder)
    assert second.ok and len(second.added) == 6 and second.unchanged == 6
    assert first_shard.stat().st_mtime_ns == sealed_at  # new files never rewrite a sealed shard
    removed = sorted(truth)[0]
    os.remove(removed)
    third = archive.add(folder)
    assert third.removed == [removed]
    with Store.open(tmp_path / "index") as store:
        assert len(store.vectors.sealed) == 2 and store.check().ok
        assert store.vectors.ntotal == store.counts()[1]
        assert store.size_bytes() > sum(f.stat().st_size for f in shard_files(store.vectors_path))
    assert archive.stats()["shards"] == 3  # two sealed and the open one
    hits = archive.search("market", top=5)
    assert hits and all(h.file != removed for h in hits)
