"""Every domain error of archive-search.

Library code raises these; the CLI turns them into one-line messages and exit codes.
Each error that concerns a file names it.
"""

from __future__ import annotations

from pathlib import Path


class ArchiveSearchError(Exception):
    """Base of all domain errors. `exit_code` is what the CLI exits with."""

    exit_code = 1


class AudioDecodeError(ArchiveSearchError):
    """A file could not be decoded as audio (missing, corrupt, not audio, too short)."""

    exit_code = 3

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class QueryError(ArchiveSearchError):
    """A query is empty, unpronounceable, too long, or otherwise unusable."""

    exit_code = 2


class IndexNotFoundError(ArchiveSearchError):
    """No index exists at the given location."""

    exit_code = 4

    def __init__(self, path: str | Path):
        self.path = Path(path)
        super().__init__(f"{self.path}: no archive index here (build one with `archive-index DIR --index {self.path}`)")


class IndexMismatchError(ArchiveSearchError):
    """An index was built with another model or feature config; vectors must not be mixed."""

    exit_code = 5


class IndexLockedError(ArchiveSearchError):
    """Another indexer holds the index's write lock."""

    exit_code = 6


class IndexCorruptError(ArchiveSearchError):
    """Vectors and metadata disagree in a way that `archive-index --check` must repair."""

    exit_code = 7


class CheckpointError(ArchiveSearchError):
    """A checkpoint is missing, of an unknown format version, or does not match its model."""

    exit_code = 8


class DataError(ArchiveSearchError):
    """A corpus, manifest, TextGrid or CSV is malformed; names the file and the problem."""

    exit_code = 9


class MissingToolError(ArchiveSearchError):
    """An external program (TTS engine, ffmpeg) that the operation needs is not installed."""

    exit_code = 10


class EvaluationError(ArchiveSearchError):
    """An evaluation got unusable input: trials without both classes, mismatched lengths,
    a manifest without word times, or a peer system that cannot run."""

    exit_code = 11


class IndexWriteError(ArchiveSearchError):
    """The index could not be written (disk full, quota, read-only file system). What was
    saved before stays intact and searchable; freeing space and re-running finishes the job."""

    exit_code = 12


class FileNotIndexedError(ArchiveSearchError):
    """A file id names no file of the index (unknown, forged, or the file was removed since)."""

    exit_code = 13

    def __init__(self, file_id: str):
        self.file_id = file_id
        super().__init__(f"no indexed file has the id {file_id!r}")


class ClusterError(ArchiveSearchError):
    """Indexing on Ray cannot start: Ray is not installed, the cluster is unreachable, or its
    workers cannot load the models."""

    exit_code = 16


class CatalogueError(ArchiveSearchError):
    """The catalogue database (--db) cannot be used: unreachable, login refused, not SQLite or
    PostgreSQL, or its driver is not installed. The message names the URL, never its password."""

    exit_code = 14
