"""Fuzz the decoding entry point as the indexer uses it: any bytes under an audio name give a
one-line error naming the file, or get indexed; never a crash, never a half-written file.
Fuzz the text query normaliser the same way: any text gives phonemes or a QueryError."""

import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive_search import Archive
from archive_search.audio import AUDIO_EXTENSIONS
from archive_search.embedders.g2p import MAX_QUERY_WORDS, pronounce
from archive_search.errors import QueryError
from tests.fakes import fake_bundle, write_episodes

SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
"""Multiplies every example count: FUZZ_SCALE=20 for a longer fuzzing session (docs/reliability.md)."""

RIFF_HEADER = bytes.fromhex("52494646 24000000 57415645 666d7420 10000000 01000100 803e0000 007d0000 02001000 64617461")


@settings(max_examples=30 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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


@settings(max_examples=100 * SCALE, deadline=None)
@given(samples=st.lists(st.floats(-1.5, 1.5, allow_nan=False, width=32), min_size=0, max_size=4000))
def test_random_query_clips_give_hits_or_a_query_error(archive, samples):
    try:
        hits = archive.search_audio(np.array(samples, np.float32), top=3)
    except QueryError as exc:
        assert str(exc)
    else:
        assert all(0.0 <= h.score <= 1.0 for h in hits)


NUMBERISH = st.text(alphabet=st.sampled_from(list("0123456789$£€.,%-' abxyzÉßæ²½#ndrsth")), max_size=60)
"""Digits, money and ordinal shapes: where g2p_en's number expander lives (and once crashed)."""


@settings(max_examples=400 * SCALE, deadline=None)
@given(text=st.one_of(st.text(max_size=80), NUMBERISH))
def test_random_text_gives_phonemes_or_a_query_error(text):
    try:
        spoken = pronounce(text)
    except QueryError as exc:
        assert str(exc).startswith("the query")
    else:
        assert 1 <= len(spoken.words) <= MAX_QUERY_WORDS
        assert all(re.fullmatch(r"[a-z]+(?:'[a-z]+)*", word) for word in spoken.words)
        assert all(spoken.phonemes)


@pytest.mark.parametrize(
    "text, words",
    [  # crashes the fuzzer found in g2p_en's number expander, and letters NFD cannot strip
        ("$,0", ("zero",)),
        ("straße", ("strasse",)),
        ("Ærøskøbing", ("aeroskobing",)),
        ("café 42", ("cafe", "forty", "two")),
    ],
)
def test_query_normalisation_regressions(text, words):
    assert pronounce(text).words == words


def test_huge_number_is_a_query_error_not_a_crash():
    with pytest.raises(QueryError, match="at most"):
        pronounce("1" * 40)  # inflect refuses numbers past 10^33; read digit by digit: 40 words


@settings(max_examples=100 * SCALE, deadline=None)
@given(text=st.one_of(st.text(max_size=40), NUMBERISH))
def test_random_text_queries_give_hits_or_a_query_error(plain_archive, text):
    try:
        hits = plain_archive.search(text, top=3)
    except QueryError as exc:
        assert str(exc) and "Traceback" not in str(exc)
    else:
        assert all(0.0 <= h.score <= 1.0 for h in hits)


@pytest.fixture(scope="module")
def plain_archive(archive):
    """The fuzz archive searched without the (slow) fake reranker."""
    return Archive.open(archive.path, fake_bundle(reranker=False))
