"""The FAISS vector index: unit vectors, inner product, ids = window primary keys.

Index type rule (see docs/performance.md):

* The encoding is the most precise of float32 / float16 / SQ8 / SQ4 (then PQ) whose size per audio hour
  (bytes per vector x windows per audio hour) fits `VECTOR_BUDGET_BYTES_PER_HOUR`, which keeps
  the whole index (vectors plus SQLite) under 20 MB per audio hour.
* Small archives (fewer than `QUANTIZE_MIN_VECTORS` vectors) are exact: float32, or float16 when
  float32 does not fit the budget. Quantizers need a value range trained on real vectors, so
  they are only built once enough of the archive's own vectors exist; the index is then
  retrained and re-encoded in place.
* Up to `IVF_MIN_VECTORS` vectors (about 25 audio hours) every search scans all vectors; above
  it the same encoding sits behind an inverted file (IVF, nlist = 4 sqrt(n), nprobe
  `IVF_NPROBE`), retrained whenever the shard has grown fourfold since the last training.
  IVF quantizers are trained on a random sample of at most `TRAIN_POINTS_PER_LIST` vectors per
  inverted list (all vectors below that), on the GPU when faiss has one.

Shards (`ShardedIndex`, what a Store holds): the rule above applies to the open shard, which
takes every new vector. When it holds `SHARD_HOURS` audio hours of vectors it is sealed (by then it
is an IVF, trained on its own sample) and a new open shard starts, so a save rewrites only the
open shard and the sealed shards whose vectors were removed, never the whole archive. Searches
run over all shards at once (faiss IndexShards, one thread per shard) and merge the top k.
An index saved before shards existed is one open shard.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from archive_search.audio import WINDOW_HOP_FRACTION, WINDOW_SCALES_S
from archive_search.errors import IndexCorruptError

VECTOR_BUDGET_BYTES_PER_HOUR = 16 * 1024 * 1024
"""Bytes of vectors per audio hour; the SQLite rows take about 2 MB more per hour."""

QUANTIZE_MIN_VECTORS = 10_000
"""Below this many vectors the index stays exact: too few vectors to train a quantizer's range."""

IVF_MIN_VECTORS = 1_000_000
"""Above this many vectors (about 25 audio hours) search goes through an inverted file."""

IVF_NPROBE = 32
"""Inverted lists scanned per query; with nlist = 4 sqrt(n) that is a few percent of the index."""

SHARD_HOURS = 50.0
"""Audio hours per sealed shard (about 2M vectors): a save rewrites at most this much; a 10,000-hour
archive is 200 shards."""

TRAIN_POINTS_PER_LIST = 40
"""Training vectors per inverted list: just above faiss's minimum of 39, since k-means time grows
with the sample (a 2M-vector shard trains in minutes on two cores, not an hour)."""

_ENCODINGS = (("Flat", 4.0), ("SQfp16", 2.0), ("SQ8", 1.0), ("SQ4", 0.5))
"""faiss factory code and bytes per dimension, most precise first."""


def windows_per_hour(scales_s=WINDOW_SCALES_S, hop_fraction=WINDOW_HOP_FRACTION) -> float:
    """Windows the indexer cuts per audio hour, summed over the scales."""
    return sum(3600.0 / (scale * hop_fraction) for scale in scales_s)


def choose_kind(n_vectors: int, dim: int, per_hour: float | None = None) -> str:
    """The index type for an archive of `n_vectors` vectors of `dim` dimensions (module rule)."""
    per_hour = per_hour or windows_per_hour()
    code = None
    for candidate, bytes_per_dim in _ENCODINGS:
        if bytes_per_dim * dim * per_hour <= VECTOR_BUDGET_BYTES_PER_HOUR:
            code = candidate
            break
    if code is None:  # very wide vectors: product quantization, one byte per sub-vector
        allowed = int(VECTOR_BUDGET_BYTES_PER_HOUR // per_hour)
        code = f"PQ{max(m for m in range(1, min(allowed, dim) + 1) if dim % m == 0)}"
    if code != "Flat" and code != "SQfp16" and n_vectors < QUANTIZE_MIN_VECTORS:
        code = "SQfp16"
    if n_vectors >= IVF_MIN_VECTORS:
        return f"IVF,{code}"
    return code


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _train(index: faiss.Index, training: np.ndarray) -> faiss.Index:
    """`index` trained on (N, dim) vectors: on a GPU copy when faiss has one, else on the CPU."""
    if _gpu_available():
        try:
            resources = faiss.StandardGpuResources()
            gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
            gpu_index.train(training)
            return faiss.index_gpu_to_cpu(gpu_index)
        except Exception:  # not every index type has a GPU version; train it on the CPU
            pass
    index.train(training)
    return index


def _sample(vectors: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """At most `limit` rows of `vectors`, drawn without replacement (all of them if fewer)."""
    if len(vectors) <= limit:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), limit, replace=False))
    return vectors[rows]


@dataclass
class SearchResult:
    """Nearest windows of one query: ids (k,) int64 and inner products (k,) float32, best first."""

    ids: np.ndarray
    scores: np.ndarray


class VectorIndex:
    """A FAISS index of unit vectors keyed by int64 window ids, with atomic save and rebuilds."""

    def __init__(self, dim: int, index: faiss.Index | None = None, kind: str | None = None, trained_at: int = 0):
        self.dim = dim
        self.kind = kind or "Flat"
        self.trained_at = trained_at
        self.index = index if index is not None else self._build(self.kind, None)
        self._gpu_index = None

    # -- building -------------------------------------------------------------------
    def _build(self, kind: str, training: np.ndarray | None) -> faiss.Index:
        if kind.startswith("IVF"):
            code = kind.split(",", 1)[1]
            n = 0 if training is None else len(training)
            nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), max(1, n // 39)))
            index = faiss.index_factory(self.dim, f"IVF{nlist},{code}", faiss.METRIC_INNER_PRODUCT)
            if training is not None and len(training):
                training = _sample(training, TRAIN_POINTS_PER_LIST * nlist)
        else:
            index = faiss.index_factory(self.dim, f"IDMap2,{kind}", faiss.METRIC_INNER_PRODUCT)
            if kind in ("SQ8", "SQ4"):
                # A 10 % margin around the trained range so later vectors are rarely clipped.
                sq = faiss.downcast_index(index.index).sq
                sq.rangestat = faiss.ScalarQuantizer.RS_minmax
                sq.rangestat_arg = 0.1
        if not index.is_trained:
            if training is None or len(training) == 0:
                raise ValueError(f"index type {kind} needs training vectors")
            index = _train(index, np.ascontiguousarray(training, dtype=np.float32))
        if kind.startswith("IVF"):
            index.nprobe = min(IVF_NPROBE, faiss.extract_index_ivf(index).nlist)
            index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct() by id after removals
        return index

    def rebuild(self, kind: str) -> None:
        """Re-encode every vector into an index of `kind` (trained on the current vectors)."""
        ids, vectors = self.ids(), self.vectors()
        index = self._build(kind, vectors if len(vectors) else None)
        if len(ids):
            index.add_with_ids(vectors, ids)
        self.index, self.kind, self.trained_at, self._gpu_index = index, kind, len(ids), None

    def maybe_migrate(self, per_hour: float | None = None) -> bool:
        """Switch to the index type the rule picks for the current size; True if it rebuilt."""
        wanted = choose_kind(self.ntotal, self.dim, per_hour)
        grown = wanted.startswith("IVF") and self.ntotal >= 4 * max(self.trained_at, 1)
        if wanted != self.kind or grown:
            self.rebuild(wanted)
            return True
        return False

    # -- contents -------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (N, dim) vectors under int64 ids (the caller guarantees the ids are new)."""
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by id; returns how many were present."""
        if len(ids) == 0:
            return 0
        removed = self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None
        return int(removed)

    def ids(self) -> np.ndarray:
        """Every stored id, (N,) int64."""
        if isinstance(self.index, faiss.IndexIDMap2) or hasattr(self.index, "id_map"):
            return faiss.vector_to_array(faiss.downcast_index(self.index).id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self.index)
        lists = ivf.invlists
        parts = []
        for list_no in range(ivf.nlist):
            size = lists.list_size(list_no)
            if size:
                parts.append(faiss.rev_swig_ptr(lists.get_ids(list_no), size).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Stored vectors (decoded), in the order of `ids` (default: `self.ids()`)."""
        if ids is None:
            if hasattr(self.index, "id_map"):
                inner = faiss.downcast_index(self.index).index
                return inner.reconstruct_n(0, inner.ntotal) if inner.ntotal else np.zeros((0, self.dim), np.float32)
            ids = self.ids()
        out = np.zeros((len(ids), self.dim), np.float32)
        for row, vector_id in enumerate(ids):
            out[row] = self.index.reconstruct(int(vector_id))
        return out

    def search(self, queries: np.ndarray, k: int) -> list[SearchResult]:
        """Top-k ids by inner product for each (Q, dim) query; missing slots are dropped."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.ntotal == 0:
            return [SearchResult(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in queries]
        index = self._search_index()
        scores, ids = index.search(queries, min(k, self.ntotal))
        results = []
        for row_scores, row_ids in zip(scores, ids):
            keep = row_ids >= 0
            results.append(SearchResult(row_ids[keep].astype(np.int64), row_scores[keep].astype(np.float32)))
        return results

    def _search_index(self) -> faiss.Index:
        """A GPU copy for searching when CUDA and faiss-gpu are present, else the CPU index."""
        if self._gpu_index is None:
            self._gpu_index = self.index
            if _gpu_available():
                try:
                    self._gpu_resources = faiss.StandardGpuResources()
                    self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
                except Exception:  # not every index type has a GPU version; the CPU one is correct
                    self._gpu_index = self.index
        return self._gpu_index

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write atomically: temp file in the same folder, fsync, rename, fsync the folder.

        A failure at any point (disk full, kill) leaves the previous file untouched.
        """
        path = Path(path)
        temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            with open(temporary, "wb") as handle:
                # Streamed in faiss's own chunks: serialize_index would hold two extra copies of
                # the whole index in memory (the peak of a long indexing run; docs/reliability.md).
                writer = faiss.PyCallbackIOWriter(handle.write)
                faiss.write_index(self.index, writer)
                del writer  # flushes its buffer into `handle`
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: str | Path, dim: int, kind: str, trained_at: int = 0) -> "VectorIndex":
        """Read a saved index; raises IndexCorruptError if it is unreadable or of another dim."""
        path = Path(path)
        try:
            index = faiss.read_index(str(path))
        except Exception as exc:
            raise IndexCorruptError(f"{path}: vector index is unreadable ({exc}); run `archive-index --check`") from exc
        if index.d != dim:
            raise IndexCorruptError(f"{path}: vector index has dimension {index.d}, the metadata says {dim}")
        if hasattr(index, "nprobe"):
            index.nprobe = min(IVF_NPROBE, faiss.extract_index_ivf(index).nlist)
        return cls(dim, index, kind, trained_at)



def shard_vectors(per_hour: float | None = None) -> int:
    """Vectors in a sealed shard: `SHARD_HOURS` of audio."""
    return int(SHARD_HOURS * (per_hour or windows_per_hour()))


def shard_files(path: str | Path) -> list[Path]:
    """The sealed shard files beside the open shard at `path`, oldest first."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.shard-(\d+)")
    found = [(int(m.group(1)), f) for f in path.parent.glob(f"{path.name}.shard-*") if (m := pattern.fullmatch(f.name))]
    return [f for _, f in sorted(found)]


class ShardedIndex:
    """Sealed shards plus one open shard (module rule), with the VectorIndex interface.

    A sealed shard's file is named by the largest id it held when sealed; ids only grow, so
    after a save interrupted between a new sealed file and the open one, the open shard's ids
    up to that number are the sealed copy's, and loading drops them from the open shard.
    """

    def __init__(self, dim: int, open_shard: VectorIndex | None = None,
                 sealed: list[tuple[int, VectorIndex]] | None = None):  # fmt: skip
        self.dim = dim
        self.open = open_shard if open_shard is not None else VectorIndex(dim)
        self.sealed = list(sealed or [])
        """(largest id at sealing, shard), oldest first."""
        self._dirty: set[int] = set()  # sealed shards (by name) whose file is out of date
        self._searcher: faiss.Index | None = None

    @property
    def shards(self) -> list[VectorIndex]:
        return [shard for _, shard in self.sealed] + [self.open]

    @property
    def kind(self) -> str:
        """The open shard's index type (sealed shards are IVF)."""
        return self.open.kind

    @property
    def trained_at(self) -> int:
        return self.open.trained_at

    @property
    def index(self) -> faiss.Index:
        """The open shard's FAISS index."""
        return self.open.index

    @property
    def ntotal(self) -> int:
        return sum(shard.ntotal for shard in self.shards)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (N, dim) vectors under new int64 ids: they go into the open shard."""
        self.open.add(ids, vectors)
        self._searcher = None

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by id from whichever shards hold them; returns how many were present."""
        if len(ids) == 0:
            return 0
        removed = self.open.remove(ids)
        for name, shard in self.sealed:
            count = shard.remove(ids)
            if count:
                self._dirty.add(name)
                removed += count
        self._searcher = None
        return removed

    def ids(self) -> np.ndarray:
        """Every stored id, (N,) int64, shard by shard."""
        return np.concatenate([shard.ids() for shard in self.shards])

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Stored vectors (decoded), in the order of `ids` (default: `self.ids()`)."""
        if ids is None:
            return np.concatenate([shard.vectors() for shard in self.shards])
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.dim), np.float32)
        for shard in self.shards:
            mask = np.isin(ids, shard.ids()) if self.sealed else np.ones(len(ids), bool)
            if mask.any():
                out[mask] = shard.vectors(ids[mask])
        return out

    def search(self, queries: np.ndarray, k: int) -> list[SearchResult]:
        """Top-k ids by inner product over every shard, merged (faiss IndexShards)."""
        filled = [shard for shard in self.shards if shard.ntotal]
        if len(filled) <= 1:
            return (filled[0] if filled else self.open).search(queries, k)
        if self._searcher is None:
            searcher = faiss.IndexShards(self.dim, True, False)  # threaded, keep each shard's ids
            for shard in filled:
                searcher.add_shard(shard._search_index())
            self._searcher = searcher
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        scores, ids = self._searcher.search(queries, min(k, self.ntotal))
        return [SearchResult(i[i >= 0].astype(np.int64), s[i >= 0].astype(np.float32)) for s, i in zip(scores, ids)]

    def maybe_migrate(self, per_hour: float | None = None) -> bool:
        """Apply the type rule to the open shard, and seal it once it holds a shard's worth; True
        if anything was rebuilt or sealed."""
        changed = self.open.maybe_migrate(per_hour)
        if self.open.ntotal >= shard_vectors(per_hour):
            if not self.open.kind.startswith("IVF"):
                self.open.rebuild(choose_kind(max(self.open.ntotal, IVF_MIN_VECTORS), self.dim, per_hour))
            name = int(self.open.ids().max())
            self.sealed.append((name, self.open))
            self._dirty.add(name)
            self.open = VectorIndex(self.dim)
            changed = True
        if changed:
            self._searcher = None
        return changed

    def save(self, path: str | Path) -> None:
        """Write the sealed shards that changed, then the open shard at `path` (each atomically)."""
        path = Path(path)
        for stale in path.parent.glob(f"{path.name}.shard-*.tmp-*"):
            stale.unlink(missing_ok=True)  # a shard save that was killed halfway (one writer holds the lock)
        for name, shard in self.sealed:
            if name in self._dirty:
                shard.save(path.with_name(f"{path.name}.shard-{name:015d}"))
                self._dirty.discard(name)
        self.open.save(path)

    @classmethod
    def load(cls, path: str | Path, dim: int, kind: str, trained_at: int = 0) -> "ShardedIndex":
        """The open shard at `path` and the sealed shards beside it (IndexCorruptError if any is unreadable)."""
        path = Path(path)
        sealed = []
        for file in shard_files(path):
            shard = VectorIndex.load(file, dim, "IVF")
            sealed.append((int(file.name.rsplit("-", 1)[1]), shard))
        open_shard = VectorIndex.load(path, dim, kind, trained_at) if path.exists() else VectorIndex(dim)
        if sealed:
            held = open_shard.ids()
            copied = held[held <= sealed[-1][0]]
            if len(copied):  # the save that sealed them stopped before rewriting the open shard
                open_shard.remove(copied)
        return cls(dim, open_shard, sealed)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
