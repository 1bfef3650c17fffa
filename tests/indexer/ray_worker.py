"""Helpers for the Ray tests that must be importable in Ray's worker processes: a slow fake
embedder that leaves its process id behind (so a test can kill the worker mid-file), and a
driver run by hand as `python -m tests.indexer.ray_worker AUDIO INDEX ADDRESS` (the killed-driver test)."""

import os
import sys
import time
from pathlib import Path

from archive_search.indexer.core import index_settings
from archive_search.indexer.distributed import RayIndexer
from archive_search.storage.store import Store
from tests.fakes import FakeAudioEmbedder, fake_bundle


class SlowEmbedder(FakeAudioEmbedder):
    """Sleeps `delay` s per call; writes its pid into `marks` (a folder) when it starts a file."""

    def __init__(self, delay: float, marks: str | None = None):
        super().__init__()
        self.delay = delay
        self.marks = marks

    def embed_spans(self, samples, spans):
        if self.marks is not None:
            Path(self.marks, str(os.getpid())).touch()
        time.sleep(self.delay)
        return super().embed_spans(samples, spans)


def slow_bundle(delay: float, marks: str | None = None):
    bundle = fake_bundle()
    bundle.audio = SlowEmbedder(delay, marks)
    return bundle


def main(audio: str, index: str, address: str) -> None:
    bundle = slow_bundle(0.3)
    store = Store.open_for_writing(index, index_settings(bundle.name, bundle.audio.dim))
    try:
        RayIndexer(store, bundle, address, save_every_s=0.0, transcribe=False).run([audio])
    finally:
        store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
