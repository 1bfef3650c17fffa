"""Indexing on a real local Ray cluster (2 worker processes): the same index as a local run,
a worker killed mid-file loses nothing, a killed driver resumes."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from click.testing import CliRunner

import archive_search.api as api
from archive_search import Archive
from archive_search.cli import index as index_cli
from archive_search.errors import ClusterError, IndexNotFoundError
from archive_search.indexer.distributed import FileJob, batches, pool_shape
from archive_search.storage.store import Store
from tests.fakes import (
    WORD_BANDS,
    FakeTranscriber,
    FakeWhisperEmbedder,
    FakeWhisperTranscriber,
    episode,
    fake_bundle,
    lexicon,
    write_episodes,
    write_wav,
)
from tests.indexer.ray_worker import slow_bundle
from tests.indexer.test_indexer import contents

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local cluster of 2 CPUs (2 worker processes), shared by this module's tests."""
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def archive_with_bad_files(folder: Path) -> None:
    write_episodes(folder, count=6)
    write_wav(folder / "silent.wav", np.zeros(16000, np.float32))
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")


def files_and_words(index: Path) -> dict:
    store = Store.open(index)
    rows = {p: (f.content_hash, f.size, round(f.duration, 4), f.n_windows, f.transcribed)
            for p, f in store.stored_files().items()}  # fmt: skip
    words = {w.file: list(zip(w.tokens, np.round(w.starts, 3), np.round(w.ends, 3))) for w in store.transcript_words()}
    store.close()
    return {"files": rows, "words": words}


def hits(archive: Archive) -> dict:
    return {
        word: [(h.file, round(h.start, 3), round(h.end, 3), round(h.score, 4)) for h in archive.search(word, top=10)]
        for word in WORD_BANDS
    }


def test_ray_index_equals_single_process_build(tmp_path, ray_cluster):
    folder = tmp_path / "audio"
    archive_with_bad_files(folder)
    local = Archive.open(tmp_path / "local", fake_bundle(lexicon(), transcriber=FakeTranscriber()))
    local_report = local.add(folder)
    remote = Archive.open(tmp_path / "ray", fake_bundle(lexicon(), transcriber=FakeTranscriber()))
    report = remote.add(folder, ray="auto")  # joins the running cluster

    assert sorted(report.added) == sorted(local_report.added) and len(report.added) == 7
    assert [str(i) for i in report.skipped] == [str(i) for i in local_report.skipped]
    assert sorted(map(str, report.errors)) == sorted(map(str, local_report.errors)) and len(report.errors) == 1
    assert report.windows_added == local_report.windows_added and report.words_added == local_report.words_added > 0
    assert contents(tmp_path / "ray") == contents(tmp_path / "local")
    assert files_and_words(tmp_path / "ray") == files_and_words(tmp_path / "local")
    found = hits(remote)
    assert found == hits(local) and all(found.values())

    again = remote.add(folder, ray="auto")  # incremental: nothing to do but the broken file
    assert again.unchanged == 7 and not again.added and not again.updated and len(again.errors) == 1


def test_ray_adds_missing_transcripts_like_a_local_run(tmp_path, ray_cluster):
    folder = tmp_path / "audio"
    write_episodes(folder, count=4)
    for name in ("local", "ray"):
        Archive.open(tmp_path / name, fake_bundle()).add(folder, transcribe=False)
    local = Archive.open(tmp_path / "local", fake_bundle(transcriber=FakeTranscriber())).add(folder)
    remote = Archive.open(tmp_path / "ray", fake_bundle(transcriber=FakeTranscriber())).add(folder, ray="auto")
    assert remote.transcribed == local.transcribed == 4 and remote.words_added == local.words_added > 0
    assert files_and_words(tmp_path / "ray") == files_and_words(tmp_path / "local")


def test_ray_worker_killed_mid_file_has_its_file_retried(tmp_path, ray_cluster):
    folder, marks = tmp_path / "audio", tmp_path / "marks"
    marks.mkdir()
    write_episodes(folder, count=8)
    Archive.open(tmp_path / "clean", fake_bundle()).add(folder, transcribe=False)
    killed: list[int] = []
    finished = threading.Event()

    def kill_first_worker_that_starts_a_file() -> None:
        while not killed and not finished.is_set():
            started = list(marks.iterdir())
            if started:
                pid = int(started[0].name)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_worker_that_starts_a_file)
    killer.start()
    try:
        report = Archive.open(tmp_path / "ray", slow_bundle(0.3, str(marks))).add(folder, transcribe=False, ray="auto")
    finally:
        finished.set()
        killer.join()

    assert killed, "no worker started a file"
    restarted = {int(p.name) for p in marks.iterdir()} - set(killed)
    assert restarted, "no worker process embedded anything after the kill"
    assert report.ok and len(report.added) == 8
    assert contents(tmp_path / "ray") == contents(tmp_path / "clean")


def test_ray_killed_driver_resumes_without_loss_or_duplicates(tmp_path, ray_cluster):
    folder, index = tmp_path / "audio", tmp_path / "ray"
    write_episodes(folder, count=10)
    Archive.open(tmp_path / "clean", fake_bundle()).add(folder, transcribe=False)
    driver = subprocess.Popen([sys.executable, "-m", "tests.indexer.ray_worker", str(folder), str(index), ray_cluster],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    committed = 0
    try:
        deadline = time.monotonic() + 120
        while committed < 2 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.1)
            with contextlib.suppress(IndexNotFoundError):  # the driver may not have written its settings yet
                with Store.open(index) as store:
                    committed = store.counts()[0]
        assert driver.poll() is None, "the driver finished before it could be killed"
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
    assert 2 <= committed < 10

    report = Archive.open(index, fake_bundle()).add(folder, transcribe=False, ray=ray_cluster)
    assert report.ok and report.unchanged >= 2 and report.unchanged + len(report.added) == 10
    assert contents(index) == contents(tmp_path / "clean")  # contents() also checks rows == vectors
    with Store.open(index) as store, Store.open(tmp_path / "clean") as clean:
        assert store.counts() == clean.counts()  # no file and no window twice


def test_ray_pool_shape_follows_cluster_resources():
    assert pool_shape({"CPU": 2.0}) == (2, {"num_cpus": 1})
    assert pool_shape({"CPU": 16.0, "GPU": 2.0}) == (2, {"num_gpus": 1, "num_cpus": 8})
    assert pool_shape({}) == (1, {"num_cpus": 1})


def test_ray_batches_split_by_files_and_bytes():
    jobs = [FileJob(f"f{i}", size, 0.0) for i, size in enumerate([10, 10, 10, 10, 10, 500, 10])]
    grouped = [[job.path for job in batch] for batch in batches(jobs, max_files=4, max_bytes=100)]
    assert grouped == [["f0", "f1", "f2", "f3"], ["f4"], ["f5"], ["f6"]]


def test_ray_option_of_archive_index(tmp_path, ray_cluster, monkeypatch):
    folder = tmp_path / "audio"
    write_episodes(folder, count=3)
    monkeypatch.setattr(api, "load_models", fake_bundle)  # what the workers load: a picklable function
    Archive.open(tmp_path / "local", fake_bundle()).add(folder, transcribe=False)
    result = CliRunner().invoke(index_cli.main, [str(folder), "--index", str(tmp_path / "ray"), "--ray", "auto",
                                                 "--no-transcript", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["index"]["added"]) == 3
    assert contents(tmp_path / "ray") == contents(tmp_path / "local")


def test_ray_option_without_ray_installed_says_how_to_get_it(tmp_path, monkeypatch):
    write_episodes(tmp_path / "audio", count=1)
    monkeypatch.setattr(api, "load_models", fake_bundle)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    arguments = [str(tmp_path / "audio"), "--index", str(tmp_path / "index"), "--ray", "auto"]
    result = CliRunner().invoke(index_cli.main, arguments)
    assert result.exit_code == ClusterError.exit_code
    assert "archive-search[ray]" in result.stderr


def test_ray_workers_share_whisper_encoder_passes_like_a_local_run(tmp_path, ray_cluster):
    """With an audio model that reads whisper's encoder states, short files take their vectors
    from their pack's pass and long files are encoded once, on the workers as locally."""
    folder = tmp_path / "audio"
    write_episodes(folder, count=6)
    long_samples, _ = episode([list(WORD_BANDS)[i % len(WORD_BANDS)] for i in range(30)], seed=99)
    write_wav(folder / "long.wav", long_samples)  # over SHORT_FILE_S: streamed and encoded once

    def shared_bundle():
        bundle = fake_bundle(lexicon(), transcriber=FakeWhisperTranscriber())
        bundle.audio = FakeWhisperEmbedder()
        return bundle

    local = Archive.open(tmp_path / "local", shared_bundle()).add(folder)
    remote = Archive.open(tmp_path / "ray", shared_bundle()).add(folder, ray="auto")
    assert local.ok and remote.ok and remote.transcribed == local.transcribed == 7
    ray_vectors, local_vectors = contents(tmp_path / "ray"), contents(tmp_path / "local")
    assert ray_vectors.keys() == local_vectors.keys()
    assert all(np.allclose(ray_vectors[key], local_vectors[key], atol=2e-4) for key in local_vectors)
    assert files_and_words(tmp_path / "ray") == files_and_words(tmp_path / "local")


def test_ray_worker_embeds_short_files_from_their_pack_pass(tmp_path):
    """The actor's work, run in this process: no short file is encoded on its own."""
    from archive_search.audio import STREAM_CHUNK_S, WINDOW_HOP_FRACTION, WINDOW_SCALES_S
    from archive_search.indexer.distributed import _Worker
    from archive_search.indexer.walk import walk_audio

    truth = write_episodes(tmp_path / "audio", count=4)
    bundle = fake_bundle(transcriber=FakeWhisperTranscriber())
    bundle.audio = FakeWhisperEmbedder()
    worker = _Worker(bundle, True, tuple(WINDOW_SCALES_S), WINDOW_HOP_FRACTION, STREAM_CHUNK_S)
    done = worker.run([FileJob(c.path, c.size, c.mtime) for c in walk_audio([tmp_path / "audio"])])
    assert all(d.issue is None and d.embedded.vectors is not None and d.embedded.short_clip is None for d in done)
    assert {d.job.path for d in done} == set(truth) and all(d.embedded.words for d in done)
    assert bundle.audio.calls == 0 and bundle.transcriber.batches == 1  # one shared encoder pass
