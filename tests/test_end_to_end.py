"""End to end with the shipped models: a small TTS archive is indexed and searched.

These use `load_models()` (the trained JMCL encoders and ParallelKWS reranker); they fail
with CheckpointError until the trained checkpoints are shipped in archive_search/checkpoints/.
"""

import pytest
import soundfile as sf

from archive_search import Archive
from archive_search.audio import SAMPLE_RATE
from archive_search.demo import build_demo_archive, build_episode, hit_matches, speak
from archive_search.embedders.registry import load_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    truth = build_demo_archive(root)
    # names whisper tiny.en mis-transcribes from this voice ("waga doo doo", "naba chantinara")
    samples, spoken = build_episode([["last summer we flew to", "[ouagadougou]", "for the festival"],
                                     ["the old king", "[nebuchadnezzar]", "built hanging gardens"]], "en-us", 160)  # fmt: skip
    sf.write(str(root / "audio" / "names.flac"), samples, SAMPLE_RATE)
    truth[str((root / "audio" / "names.flac").resolve())] = spoken
    archive = Archive.open(root / "index", load_models())
    report = archive.add([root / "audio"])
    assert report.ok and len(report.added) == len(truth)
    return archive, truth, root


def assert_right_first(hits, truth, words):
    """The top hit is in the right file and time (NIST STD midpoint rule, as archive-eval)."""
    assert hits, f"no hits for {words!r}"
    top = hits[0]
    places = [(path, s.start, s.end) for path, said in truth.items() for s in said if s.words == words]
    assert hit_matches(top, truth, words), f"{words!r}: top hit {top} is not one of {places}"
    assert 0.0 <= top.score <= 1.0


@pytest.mark.parametrize("word", ["observatory", "glacier", "lighthouse", "bicycles"])
def test_word_ranks_first(archive, word):
    archive, truth, _ = archive
    assert_right_first(archive.search(word, top=5), truth, word)


def test_two_word_phrase_ranks_first(archive):
    archive, truth, _ = archive
    assert_right_first(archive.search("harvest moon", top=5), truth, "harvest moon")


@pytest.mark.parametrize("word,voice", [("volcano", "en-us+m3"), ("orchestra", "en-gb-x-rp")])
def test_query_by_example_ranks_first(archive, word, voice, no_network):
    archive, truth, root = archive  # the reranker's whisper encoder loads here, offline
    clip = root / f"query-{word}.wav"
    sf.write(str(clip), speak(word, voice, 150), SAMPLE_RATE)
    assert_right_first(archive.search_audio(clip, top=5), truth, word)


@pytest.mark.parametrize("words", ["lighthouse", "harvest moon"])
def test_text_query_spoken_by_tts_ranks_first(archive, words, no_network):
    _, truth, root = archive
    spoken = Archive.open(root / "index", load_models(text_scoring="tts"))
    assert_right_first(spoken.search(words, top=5), truth, words)


@pytest.mark.parametrize("word", ["glacier", "orchestra"])
def test_a_clearly_spoken_word_is_transcribed_and_found_by_exact_match(archive, word):
    archive, truth, _ = archive
    hits = archive.searcher(channels=("exact",)).search(word, top=5)
    assert_right_first(hits, truth, word)
    assert word in hits[0].text.split()


@pytest.mark.parametrize("name", ["ouagadougou", "nebuchadnezzar"])
def test_a_misheard_name_is_found_by_the_phonetic_or_acoustic_path(archive, name):
    archive, truth, _ = archive
    assert archive.searcher(channels=("exact",)).search(name, top=5) == []  # whisper wrote something else
    assert_right_first(archive.search(name, top=5), truth, name)
    for channels in [("phonetic",), ("vectors",)]:
        hits = archive.searcher(channels=channels).search(name, top=5)
        if hits and hit_matches(hits[0], truth, name):
            return
    pytest.fail(f"{name}: neither the phonetic nor the acoustic channel alone ranks it first")
