"""The Python API: `Archive.open(path)`, `.add(paths)`, `.search(text)`, `.search_audio(clip)`, `.check()`."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from archive_search.audio import MAX_PLAY_S, PLAY_CONTEXT_S, load_segment
from archive_search.embedders.registry import ModelBundle, load_models
from archive_search.errors import FileNotIndexedError, IndexNotFoundError, QueryError
from archive_search.indexer.core import Indexer, IndexReport, ProgressCallback, index_settings
from archive_search.search.engine import CHANNELS, RERANK_REGIONS, Hit, Searcher
from archive_search.storage.store import CheckReport, Store, path_key

FILE_ID_HEX = 16
"""Hex digits of a file id: 64 bits of the path's SHA-256, so ids of distinct files do not collide."""


def file_id(path: str | Path) -> str:
    """The stable id of an indexed file: a hash of its path, so it survives re-indexing and
    names a file without being a path (nothing can be forged into one)."""
    return hashlib.sha256(path_key(path)).hexdigest()[:FILE_ID_HEX]


@dataclass(frozen=True)
class IndexedFile:
    """A file of the index: its id (`file_id`), absolute path and duration in seconds."""

    id: str
    path: str
    duration: float


@dataclass(frozen=True)
class Clip:
    """A stretch of an indexed file: `samples` (S,) float32 at 16 kHz starting `start` s into it."""

    file: IndexedFile
    start: float
    samples: np.ndarray


class Archive:
    """An index folder and the models that fill and search it.

    Opening is cheap: the index is read, and the models loaded, on first use. Searching an
    index that does not exist raises IndexNotFoundError; `add` creates it.
    """

    def __init__(self, path: str | Path, models: ModelBundle | None = None, rerank_regions: int = RERANK_REGIONS,
                 db: str | None = None, verify_regions: int = 0):  # fmt: skip
        self.path = Path(path)
        self.db = db
        self._models = models
        self._given_models = models is not None
        self.rerank_regions = rerank_regions
        self.verify_regions = verify_regions
        self._store: Store | None = None
        self._searcher: Searcher | None = None
        self._files: tuple[tuple[int, int], dict[str, IndexedFile]] | None = None
        """(the store's files_version, files by id) as last read."""

    @classmethod
    def open(cls, path: str | Path, models: ModelBundle | None = None, rerank_regions: int = RERANK_REGIONS,
             db: str | None = None, verify_regions: int = 0) -> "Archive":  # fmt: skip
        """An archive at `path`; `models` defaults to the shipped ones (`load_models()`).

        rerank_regions: how many candidate regions the reranker scores per query (latency knob).
        db: a SQLAlchemy URL of the catalogue database (e.g. postgresql://user@host/archive) for
        an index whose catalogue lives outside the folder; None: the folder's own SQLite file, or
        the database its first `add` with a URL recorded (storage/store.py: catalogue.json, no
        password). CatalogueError if the database cannot be used.
        verify_regions: text queries' best regions that whisper verifies by forced decoding
        (opt-in; about half a second of CPU each; `search.engine.Searcher`).
        """
        return cls(path, models, rerank_regions, db, verify_regions)

    @property
    def exists(self) -> bool:
        return Store.exists(self.path)

    @property
    def models(self) -> ModelBundle:
        if self._models is None:
            self._models = load_models()
        return self._models

    def add(self, paths: Iterable[str | Path] | str | Path, progress: ProgressCallback | None = None, transcribe: bool = True,
            ray: str | None = None) -> IndexReport:  # fmt: skip
        """Index audio under `paths` (incremental: unchanged skipped, changed redone, vanished removed).

        transcribe: also keep a transcript of every file (whisper tiny.en), which text search
        fuses with the acoustic evidence; files indexed without one gain it on a later run with
        transcribe on. False keeps an acoustic-only index (about 2x faster to build on a CPU, docs/performance.md).
        ray: "auto" or a Ray cluster address: Ray workers decode, embed and transcribe while this
        process commits (indexer/distributed.py; ClusterError if Ray cannot start).
        Takes the index's write lock for the run (IndexLockedError if another indexer has it).
        """
        if isinstance(paths, (str, Path)):
            paths = [paths]
        paths = [os.fspath(p) for p in paths]
        models = self.models
        report = IndexReport(str(self.path))
        store = Store.open_for_writing(self.path, index_settings(models.name, models.audio.dim), db=self.db)
        try:
            # open_for_writing repaired what a killed run left; say which files it dropped.
            report.repaired = list(store.last_check.dropped_files) if store.last_check else []
            if ray is not None:
                from archive_search.indexer.distributed import RayIndexer

                # Workers load the shipped models themselves; a bundle given to open() is sent to them.
                source = self._models if self._given_models else load_models
                RayIndexer(store, source, ray, progress=progress, transcribe=transcribe).run(paths, report)
            else:
                transcriber = models.transcriber if transcribe else None
                Indexer(store, models.audio, progress=progress, transcriber=transcriber).run(paths, report)
        finally:
            store.close()
        self._reset()
        return report

    def search(self, text: str, top: int = 10, threshold: float | None = None) -> list[Hit]:
        """Hits for a word or short phrase, best first, scores in [0, 1]."""
        return self._get_searcher().search(text, top=top, threshold=threshold)

    def search_audio(self, query: str | Path | np.ndarray, top: int = 10, threshold: float | None = None) -> list[Hit]:
        """Hits for a spoken clip: a path to an audio file or 16 kHz mono float samples."""
        return self._get_searcher().search_audio(query, top=top, threshold=threshold)

    def searcher(self, channels: Sequence[str] = CHANNELS) -> Searcher:
        """A Searcher over this archive with only some candidate channels (`search.engine.CHANNELS`):
        for ablations, or to search the transcript or the acoustic index alone."""
        return Searcher(self._get_store(), self.models, rerank_regions=self.rerank_regions, channels=channels,
                        verify_regions=self.verify_regions)

    def check(self, repair: bool = False) -> CheckReport:
        """Compare rows with vectors; `repair` takes the write lock, upgrades an older catalogue
        and fixes what it can."""
        if not repair:
            with Store.open(self.path, db=self.db) as store:
                return store.check(repair=False)
        if not Store.exists(self.path):
            raise IndexNotFoundError(self.path)
        writer = Store.open_for_writing(self.path, None, db=self.db)  # checks, upgrades and repairs on open
        try:
            report = writer.last_check
        finally:
            writer.close()
        self._reset()
        assert report is not None
        return report

    def stats(self) -> dict:
        """Files, windows, vectors, bytes on disk, index type (of the open shard), shards and model of the index."""
        store = self._get_store()
        files, windows = store.counts()
        return {
            "index": str(self.path),
            "files": files,
            "windows": windows,
            "vectors": store.vectors.ntotal,
            "words": store.word_count(),
            "transcript_model": store.transcript_model,
            "bytes": store.size_bytes(),
            "catalogue": store.location,
            "index_kind": store.vectors.kind,
            "shards": len(store.vectors.sealed) + 1,
            "model": store.settings.model_name if store.settings else None,
        }

    def files(self) -> list[IndexedFile]:
        """Every indexed file, as it is now (a file another process indexes shows up)."""
        return list(self._files_by_id().values())

    def _files_by_id(self) -> dict[str, IndexedFile]:
        # Re-read only when the file set changed: one cheap query per call instead of every row.
        store = self._get_store()
        version = store.files_version()
        if self._files is None or self._files[0] != version:
            rows = store.stored_files().values()
            self._files = (version, {file_id(f.path): IndexedFile(file_id(f.path), f.path, f.duration) for f in rows})
        return self._files[1]

    def clip(self, file_id: str, start: float, end: float, context: float = PLAY_CONTEXT_S) -> Clip:
        """[start - context, end + context) seconds of the indexed file named by `file_id`, cut
        to the file (start == end: a point, heard with its context). Reads only files of the
        index: FileNotIndexedError for any other id, QueryError for times outside the file or a
        stretch over MAX_PLAY_S. Safe to call while another thread searches."""
        if not (math.isfinite(start) and math.isfinite(end) and 0.0 <= start <= end):
            raise QueryError(f"start and end must be seconds with 0 <= start <= end, not {start} and {end}")
        if end - start > MAX_PLAY_S:
            raise QueryError(f"at most {MAX_PLAY_S:.0f} s can be played at once, not {end - start:.1f} s")
        found = self._files_by_id().get(file_id)
        if found is None:
            raise FileNotIndexedError(file_id)
        if start >= found.duration:
            raise QueryError(f"start {start} s is past the end of the file ({found.duration:.2f} s)")
        first = max(0.0, start - context)
        return Clip(found, first, load_segment(found.path, first, min(found.duration, end + context)))

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _get_store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.path, db=self.db)
        return self._store

    def _get_searcher(self) -> Searcher:
        if self._searcher is None:
            store = self._get_store()  # IndexNotFoundError before any model is loaded
            self._searcher = Searcher(store, self.models, rerank_regions=self.rerank_regions, verify_regions=self.verify_regions)
        return self._searcher

    def _reset(self) -> None:
        if self._store is not None:
            self._store.close()
        self._store = None
        self._searcher = None
        self._files = None
