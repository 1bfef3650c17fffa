"""Fuzz the decoding entry point as the indexer uses it: any bytes under an audio name give a
one-line error naming the file, or get indexed; never a crash, never a half-written file."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive_search import Archive
from archive_search.audio import AUDIO_EXTENSIONS
from archive_search.errors import QueryError
from tests.fakes import fake_bundle, write_episodes

RIFF_HEADER = bytes.fromhex("52494646 24000000 57415645 666d7420 10000000 01000100 803e0000 007d0000 02001000 64617461")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.binary(max_size=3000),
        st.binary(max_size=3000).map(lambda b: RIFF_HEADER + b),  # a WAV header with random data after it
        st.binary(max_size=3000).map(lambda b: b"fLaC" + b),
        st.binary(max_size=3000).map(lambda b: b"OggS" + b),
    ),
    extension=st.sampled_from(sorted(AUDIO_EXTENSIONS - {".m4a", ".aac", ".mp4", ".wma", ".webm"})),
)
def test_random_bytes_never_crash_the_indexer(tmp_path_factory, payload, extension):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / f"input{extension}"
    path.write_bytes(payload)
    report = Archive.open(folder / "index", fake_bundle()).add([path])
    assert len(report.errors) + len(report.added) == 1
    for issue in report.errors:
        assert issue.path == str(path) and issue.reason and "\n" not in issue.reason
    archive = Archive.open(folder / "index", fake_bundle())
    assert archive.check().ok
    if report.added:
        stats = archive.stats()
        assert stats["files"] == 1 and stats["vectors"] == stats["windows"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-archive")
    write_episodes(folder / "audio", count=2)
    archive = Archive.open(folder / "index", fake_bundle())
    archive.add([folder / "audio"])
    return archive


@settings(max_examples=100, deadline=None)
@given(samples=st.lists(st.floats(-1.5, 1.5, allow_nan=False, width=32), min_size=0, max_size=4000))
def test_random_query_clips_give_hits_or_a_query_error(archive, samples):
    try:
        hits = archive.search_audio(np.array(samples, np.float32), top=3)
    except QueryError as exc:
        assert str(exc)
    else:
        assert all(0.0 <= h.score <= 1.0 for h in hits)
