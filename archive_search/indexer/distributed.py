"""Indexing on a Ray cluster: the driver walks, detects changes and commits; actors do the decoding.

* The driver is an `Indexer`: it walks the folders, decides what changed exactly as a local run
  does, and is the ONE writer, committing each file through the Store in one transaction. So the
  write lock, crash repair, incremental runs and `--check` are those of a local run.
* Actors (`_Worker`) decode, window, embed and transcribe. Each loads the models once; a batch
  of up to `BATCH_FILES` files (`BATCH_BYTES`) goes to one actor, so short files still share
  whisper passes. The pool is one actor per GPU where the cluster has GPUs, else one per CPU.
* Faults: an actor whose process dies is restarted by Ray (`max_restarts=-1`), which runs its
  unfinished calls again (`max_task_retries=WORKER_RETRIES`), on another node if its own is
  gone. A batch whose worker died more often than that is reported file by file and retried
  on the next run. A file that fails on a worker is reported as a local run reports it. A killed
  driver loses only uncommitted files; the next run resumes from what was committed.
* Workers read files by path: every node must see the archive at the same path (a shared mount).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

from archive_search.audio import MIN_AUDIO_S
from archive_search.embedders.transcriber import TimedWord, transcribe_packed
from archive_search.errors import ArchiveSearchError, AudioDecodeError, ClusterError, IndexWriteError
from archive_search.indexer.core import (
    SILENCE_PEAK,
    EmbeddedFile,
    FileIssue,
    Indexer,
    IndexReport,
    ProgressCallback,
    _checked,
    _native_rate,
    embed_file,
    embed_packed,
    file_issue,
    stream_transcript,
)
from archive_search.indexer.walk import Candidate, content_hash
from archive_search.storage.store import Store, StoredFile

BATCH_FILES = 4
"""Files per actor call: enough for short files to share a whisper pass, few enough to balance the pool."""

BATCH_BYTES = 16 * 1024 * 1024
"""A batch closes past this many bytes of audio files, so long files travel alone."""

WORKER_RETRIES = 3
"""Times Ray re-runs a batch whose actor died; a file that kills every worker is then reported."""

CALLS_PER_WORKER = 2
"""Batches queued on each actor, so it starts the next while the driver commits the last."""

@dataclass(frozen=True)
class FileJob:
    """One file for a worker: embed it (and hash it when `digest` is None), or only transcribe it."""

    path: str
    size: int
    mtime: float
    digest: str | None = None
    transcript_only: bool = False


@dataclass(frozen=True)
class FileDone:
    """A worker's answer for one job: the embedded file or the words, or the issue that stopped it."""

    job: FileJob
    digest: str | None = None
    sample_rate: int = 0
    embedded: EmbeddedFile | None = None
    words: list[TimedWord] | None = None
    issue: FileIssue | None = None
    audio_s: float = 0.0


@dataclass(frozen=True)
class RemoteModel:
    """What the driver knows of the workers' models: the names and the vector width."""

    name: str
    dim: int = 0


def pool_shape(resources: dict[str, float]) -> tuple[int, dict[str, float]]:
    """(actors, each actor's Ray resources) from `ray.cluster_resources()`: one actor per GPU
    (sharing the CPUs out) where there are GPUs, else one single-CPU actor per CPU."""
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if gpus:
        return gpus, {"num_gpus": 1, "num_cpus": max(1, cpus // gpus)}
    return max(1, cpus), {"num_cpus": 1}


def batches(jobs: Iterable[FileJob], max_files: int = BATCH_FILES, max_bytes: int = BATCH_BYTES,
            ) -> Iterator[list[FileJob]]:  # fmt: skip
    """Consecutive jobs grouped up to `max_files` files or `max_bytes` bytes (a larger file goes alone)."""
    batch: list[FileJob] = []
    size = 0
    for job in jobs:
        if batch and (len(batch) >= max_files or size + job.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(job)
        size += job.size
    if batch:
        yield batch


class _Worker:
    """A Ray actor's state: the models, loaded once per process."""

    def __init__(self, models, transcribe: bool, scales: tuple[float, ...], hop_fraction: float, chunk_s: float):
        bundle = models() if callable(models) else models
        self.name = bundle.name
        self.embedder = bundle.audio
        self.transcriber = bundle.transcriber if transcribe else None
        self.scales, self.hop_fraction, self.chunk_s = scales, hop_fraction, chunk_s

    def describe(self) -> tuple[str, int, str | None, int]:
        """(model name, vector width, transcriber name, process id)."""
        return self.name, self.embedder.dim, self.transcriber.name if self.transcriber else None, os.getpid()

    def run(self, jobs: list[FileJob]) -> list[FileDone]:
        """Embed (or transcribe) each file; short files are transcribed together at the end."""
        done: list[FileDone] = []
        for job in jobs:
            seconds = [0.0]

            def on_chunk(chunk_s: float) -> None:
                seconds[0] += chunk_s

            try:
                if job.transcript_only:
                    assert self.transcriber is not None
                    words = stream_transcript(job.path, self.transcriber, self.chunk_s, on_chunk)
                    done.append(FileDone(job, words=words, audio_s=seconds[0]))
                    continue
                digest = job.digest or content_hash(job.path)
                sample_rate = _native_rate(job.path)
                embedded = embed_file(job.path, self.embedder, self.scales, self.hop_fraction, self.chunk_s,
                                      self.transcriber, on_chunk, defer_short=True)  # fmt: skip
            except MemoryError:
                raise
            except Exception as exc:  # reported as the local indexer reports it
                done.append(FileDone(job, issue=file_issue(job.path, exc), audio_s=seconds[0]))
                continue
            done.append(FileDone(job, digest, sample_rate, embedded, audio_s=seconds[0]))
        return self._transcribe_short(done)

    def _transcribe_short(self, done: list[FileDone]) -> list[FileDone]:
        """Transcribe the batch's short files in shared passes, as the local indexer's packs do;
        files whose vectors were deferred get them from the same encoder pass (`embed_packed`)."""
        waiting = [
            i for i, d in enumerate(done)
            if d.embedded is not None and d.embedded.short_clip is not None
            and d.embedded.duration >= MIN_AUDIO_S and d.embedded.peak >= SILENCE_PEAK
        ]  # fmt: skip
        if not waiting or self.transcriber is None:
            return done
        files = [done[i].embedded for i in waiting]
        clips = [f.short_clip for f in files]  # type: ignore[union-attr]
        deferred = files[0].vectors is None  # type: ignore[union-attr]
        try:
            if deferred:
                packed_vectors, packed = embed_packed(self.embedder, self.transcriber, clips, [f.windows for f in files])
            else:
                packed_vectors, packed = [f.vectors for f in files], transcribe_packed(self.transcriber, clips)
        except (ArchiveSearchError, RuntimeError, ValueError) as exc:
            for i in waiting:
                issue = FileIssue(done[i].job.path, f"transcription failed: {exc}")
                done[i] = replace(done[i], embedded=None, issue=issue)
            return done
        for i, embedded, vectors, words in zip(waiting, files, packed_vectors, packed):
            try:
                vectors = _checked(self.embedder, done[i].job.path, vectors, len(embedded.windows))
            except AudioDecodeError as exc:
                done[i] = replace(done[i], embedded=None, issue=file_issue(done[i].job.path, exc))
                continue
            done[i] = replace(done[i], embedded=replace(embedded, vectors=vectors, words=words, short_clip=None))
        return done


@contextlib.contextmanager
def ray_session(address: str):
    """Ray, connected to the cluster at `address` ("auto": the one this machine belongs to, else a
    new local one on this machine's CPUs and GPUs); an existing connection is used as it is."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterError("indexing on Ray needs the ray extra: pip install 'archive-search[ray]'") from exc
    if ray.is_initialized():
        yield ray
        return
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "auto":
            try:
                ray.init(address="auto", **options)
            except ConnectionError:
                ray.init(**options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r} ({exc}); start it with `ray start --head` or use --ray auto"
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


class RayIndexer(Indexer):
    """An Indexer whose files are decoded, embedded and transcribed by a pool of Ray actors."""

    def __init__(self, store: Store, models, address: str = "auto", progress: ProgressCallback | None = None,
                 save_every_s: float = 30.0, chunk_s: float | None = None, transcribe: bool = True):  # fmt: skip
        """models: a ModelBundle (shipped to each actor) or a picklable function that loads one there."""
        super().__init__(store, RemoteModel("", 0), progress, save_every_s, chunk_s)
        self.models = models
        self.address = address
        self.transcribe = transcribe
        self.workers: list = []
        self._models_ref = None
        self.worker_pids: list[int] = []

    def run(self, roots: Iterable[str | Path], report: IndexReport | None = None) -> IndexReport:
        with ray_session(self.address) as ray:
            self._start_pool(ray)
            try:
                return super().run(roots, report)
            finally:
                for worker in self.workers:
                    ray.kill(worker, no_restart=True)
                self.workers, self._models_ref = [], None

    def _start_pool(self, ray) -> None:
        count, resources = pool_shape(ray.cluster_resources())
        actor = ray.remote(max_restarts=-1, max_task_retries=WORKER_RETRIES, **resources)(_Worker)
        # Held for the pool's life: a restarted actor is built again from this object.
        self._models_ref = ray.put(self.models)
        arguments = (self._models_ref, self.transcribe, self.scales, self.hop_fraction, self.chunk_s)
        self.workers = [actor.remote(*arguments) for _ in range(count)]
        try:
            described = ray.get([worker.describe.remote() for worker in self.workers])
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"the Ray workers could not load the models: {_first_line(exc)}") from exc
        name, dim, transcriber, _ = described[0]
        self.store.check_model(name, dim)  # IndexMismatchError rather than mixed vectors
        self.embedder = RemoteModel(name, dim)
        self.transcriber = RemoteModel(transcriber) if transcriber else None
        self.worker_pids = [pid for *_, pid in described]

    def _index_all(self, candidates: list[Candidate], stored: dict[str, StoredFile], report: IndexReport,
                   started: float) -> None:  # fmt: skip
        import ray

        self._stored, self._extra_jobs, self._done = stored, [], 0
        self._total, self._started = len(candidates), started
        free = deque(worker for worker in self.workers for _ in range(CALLS_PER_WORKER))
        running: dict = {}
        for batch in batches(self._jobs(candidates, report)):
            while not free:
                free.append(self._collect(ray, running, report))
            worker = free.popleft()
            running[worker.run.remote(batch)] = (worker, batch)
        while running:
            self._collect(ray, running, report)

    def _jobs(self, candidates: list[Candidate], report: IndexReport) -> Iterator[FileJob]:
        """The files to send out, after the driver's change detection (as a local run does it)."""
        for candidate in candidates:
            previous = self._stored.get(candidate.path)
            digest = None
            try:
                if previous is not None:
                    digest = self._changed(candidate, previous, report)
                    if digest is None:
                        self._done += 1
                        yield from self._take_extra_jobs()
                        continue
            except (IndexWriteError, MemoryError):
                raise
            except Exception as exc:
                report.errors.append(file_issue(candidate.path, exc))
                continue
            yield FileJob(candidate.path, candidate.size, candidate.mtime, digest)

    def _take_extra_jobs(self) -> list[FileJob]:
        jobs, self._extra_jobs = self._extra_jobs, []
        return jobs

    def _add_missing_transcript(self, stored: StoredFile, report: IndexReport) -> None:
        if self.transcriber is None or stored.transcribed:
            return
        if not stored.n_windows:
            self._put_transcript(stored.path, [], report)
            return
        self._extra_jobs.append(FileJob(stored.path, 0, 0.0, transcript_only=True))

    def _collect(self, ray, running: dict, report: IndexReport):
        """Wait for one batch, commit its files; returns the actor that ran it."""
        (ready,), _ = ray.wait(list(running), num_returns=1)
        worker, batch = running.pop(ready)
        try:
            results = ray.get(ready)
        except ray.exceptions.RayError as exc:
            reason = f"its Ray worker failed {WORKER_RETRIES + 1} times ({_first_line(exc)}); the next run tries again"
            report.errors.extend(FileIssue(job.path, reason) for job in batch)
            return worker
        for done in results:
            self._commit_done(done, report)
        return worker

    def _commit_done(self, done: FileDone, report: IndexReport) -> None:
        job = done.job
        report.audio_s += done.audio_s
        self._done += 1
        if done.issue is not None:
            report.errors.append(done.issue)
        elif job.transcript_only:
            self._put_transcript(job.path, done.words or [], report)
        else:
            assert done.embedded is not None and done.digest is not None
            candidate = Candidate(job.path, job.size, job.mtime)
            self._accept(candidate, self._stored.get(job.path), done.digest, done.sample_rate, done.embedded, report)
        self._notify(self._done, self._total, report, self._started, job.path)
        self._maybe_save()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
