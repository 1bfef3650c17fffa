"""Indexes a folder with the fake models, slowly, saving vectors after every file; the crash
test runs it in a forked child and SIGKILLs it at random moments.
`python -m tests.indexer.crash_worker AUDIO INDEX` runs it by hand."""

import sys
import time

from archive_search.indexer.core import Indexer, index_settings
from archive_search.storage.store import Store
from tests.fakes import FakeAudioEmbedder


class SlowEmbedder(FakeAudioEmbedder):
    def embed_spans(self, samples, spans):
        time.sleep(0.01)
        return super().embed_spans(samples, spans)


def main(audio: str, index: str, quiet: bool = False) -> None:
    embedder = SlowEmbedder()
    if not quiet:
        print("ready", flush=True)
    store = Store.open_for_writing(index, index_settings(embedder.name, embedder.dim))
    try:
        Indexer(store, embedder, save_every_s=0.0, chunk_s=2.0).run([audio])
    finally:
        store.close()
    if not quiet:
        print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
