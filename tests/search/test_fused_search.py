"""Fused text search on an index that keeps transcripts (fake models, tone-word audio)."""

import pytest

from archive_search import Archive
from archive_search.search.engine import Searcher
from tests.fakes import FakeTranscriber, fake_bundle, lexicon, write_episodes

HEARD = {"planet": "plan it", "silver": "sliver"}
"""Words the fake transcriber gets wrong, as whisper misspells names."""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("fused")
    truth = write_episodes(root / "audio", count=6)
    bundle = fake_bundle(lexicon(), transcriber=FakeTranscriber(HEARD))
    assert Archive.open(root / "index", bundle).add([root / "audio"]).transcribed == 6
    return root, truth, bundle


def places(truth, word):
    return {(path, start) for path, times in truth.items() for w, start, _ in times if w == word}


def searcher(root, bundle, channels):
    archive = Archive.open(root / "index", bundle)
    return Searcher(archive._get_store(), bundle, channels=channels)


def found(hits, expected):
    return all(any(h.file == p and abs(h.start - s) <= 0.5 for p, s in expected) for h in hits)


@pytest.mark.parametrize("channels", [("exact",), ("phonetic",), ("vectors",), ("vectors", "exact", "phonetic")])
def test_a_clearly_heard_word_is_found_through_each_channel(built, channels):
    root, truth, bundle = built
    expected = places(truth, "market")
    hits = searcher(root, bundle, channels).search("market", top=len(expected))
    assert len(hits) == len(expected) and found(hits, expected)


def test_a_misheard_name_is_missed_by_exact_match_and_found_phonetically_and_acoustically(built):
    root, truth, bundle = built
    expected = places(truth, "planet")
    assert searcher(root, bundle, ("exact",)).search("planet", top=5, threshold=0.5) == []
    for channels in [("phonetic",), ("vectors",), ("vectors", "exact", "phonetic")]:
        hits = searcher(root, bundle, channels).search("planet", top=len(expected))
        assert found(hits, expected), channels


def test_fused_regions_carry_every_channels_evidence(built):
    root, truth, bundle = built
    evidence = searcher(root, bundle, ("vectors", "exact", "phonetic")).gather("coffee", top=10)
    assert evidence.fused
    best = max(evidence.regions, key=lambda r: (r.exact is not None, r.similarity or 0))
    assert best.sources == {"vectors", "exact", "phonetic"} or best.sources == {"vectors", "exact"}
    assert best.exact.words == "coffee" and best.rerank is not None
    assert evidence.features().shape[0] == len(evidence.regions)


def test_hits_carry_the_words_around_them(built):
    root, truth, bundle = built
    hits = Archive.open(root / "index", bundle).search("garden", top=2)
    assert hits and all(hit.text and "garden" in hit.text.split() for hit in hits)
    assert "plan it" in " ".join(h.text for h in Archive.open(root / "index", bundle).search("planet", top=3))


def test_an_acoustic_only_index_scores_as_before(tmp_path):
    truth = write_episodes(tmp_path / "audio", count=4)
    bundle = fake_bundle(lexicon(), transcriber=FakeTranscriber(HEARD))
    archive = Archive.open(tmp_path / "index", bundle)
    archive.add([tmp_path / "audio"], transcribe=False)
    evidence = archive._get_searcher().gather("river")
    assert not evidence.fused and all(r.exact is None and r.phonetic is None for r in evidence.regions)
    hits = archive.search("river", top=3)
    assert all(h.text is None for h in hits) and found(hits[:2], places(truth, "river"))


def test_query_by_example_searches_the_clips_words_too(built):
    root, truth, bundle = built
    path = sorted(truth)[1]
    word, start, end = truth[path][0]
    import soundfile as sf

    samples, rate = sf.read(path, dtype="float32")
    clip = samples[int(start * rate) - 1600 : int(end * rate) + 1600]
    searcher = Archive.open(root / "index", bundle).searcher()
    evidence = searcher.gather_audio(clip, top=10, fuse_transcript=True)
    assert evidence.fused and any(r.exact is not None and r.exact.words == word for r in evidence.regions)
    assert found(searcher.hits(evidence, top=3)[:1], places(truth, word))
    # without a fusion fitted for spoken queries the engine keeps the acoustic path
    plain = searcher.gather_audio(clip, top=10)
    assert not plain.fused and all(r.exact is None for r in plain.regions)
    hits = searcher.hits(plain, top=3)
    assert found(hits[:1], places(truth, word)) and word in hits[0].text.split()


def test_a_clip_whisper_hears_unclearly_keeps_the_acoustic_path(built):
    from dataclasses import replace

    import soundfile as sf

    from archive_search.search.engine import QBE_MIN_WORD_PROBABILITY

    class Unsure(FakeTranscriber):
        def transcribe(self, samples):
            return [replace(w, probability=QBE_MIN_WORD_PROBABILITY / 2) for w in super().transcribe(samples)]

    root, truth, bundle = built
    path = sorted(truth)[1]
    word, start, end = truth[path][0]
    samples, rate = sf.read(path, dtype="float32")
    clip = samples[int(start * rate) - 1600 : int(end * rate) + 1600]
    unsure_transcriber = Unsure(HEARD)
    unsure = Archive.open(root / "index", replace(bundle, transcriber_factory=lambda: unsure_transcriber, _transcriber=None)).searcher()
    evidence = unsure.gather_audio(clip, top=10, fuse_transcript=True)
    assert unsure_transcriber.calls == 1
    assert not evidence.fused and all(r.exact is None and r.phonetic is None for r in evidence.regions)
    plain = Archive.open(root / "index", bundle).searcher().gather_audio(clip, top=10)
    assert unsure.hits(evidence, top=5) == Archive.open(root / "index", bundle).searcher().hits(plain, top=5)


def test_a_searcher_sees_transcripts_written_after_it_opened(tmp_path):
    write_episodes(tmp_path / "audio", count=2)
    bundle = fake_bundle(lexicon(), transcriber=FakeTranscriber())
    Archive.open(tmp_path / "index", bundle).add([tmp_path / "audio"], transcribe=False)
    reader = Archive.open(tmp_path / "index", bundle)
    assert not reader._get_searcher().gather("apple").fused
    Archive.open(tmp_path / "index", bundle).add([tmp_path / "audio"])
    assert reader._get_searcher().gather("apple").fused


def test_a_calibrated_scorer_fuses_only_with_a_fitted_fusion(built):
    from dataclasses import replace

    from archive_search.search.calibration import Calibration, ScoreCalibration, scorer_name
    from archive_search.search.fusion import PRIOR_FUSION

    root, truth, bundle = built
    scorer = scorer_name(bundle.name, bundle.reranker.name)
    calibrated = replace(bundle, calibrations={scorer: Calibration(scorer, {"text": ScoreCalibration(0.5, 10.0)})})
    assert not searcher(root, calibrated, ("vectors", "exact", "phonetic")).gather("river").fused
    fitted = replace(calibrated, fusions={scorer: {"text": PRIOR_FUSION}})
    assert searcher(root, fitted, ("vectors", "exact", "phonetic")).gather("river").fused
    assert searcher(root, calibrated, ("vectors", "exact", "phonetic")).gather("river", fuse_transcript=True).fused


def test_the_verifier_rescores_the_best_regions_by_what_whisper_hears_there(built):
    from dataclasses import replace

    from archive_search.search.calibration import Calibration, ScoreCalibration, scorer_name
    from archive_search.search.engine import VERIFIED_KIND
    from archive_search.search.fusion import PRIOR_FUSION, Fusion

    root, truth, bundle = built
    scorer = scorer_name(bundle.name, bundle.reranker.name)
    check = Fusion(("forced_mean",), (1.0,), 5.0)  # heard: sigmoid(5); not heard: sigmoid(-5)
    fitted = replace(bundle, calibrations={scorer: Calibration(scorer, {"text": ScoreCalibration(0.5, 10.0)})},
                     fusions={scorer: {"text": PRIOR_FUSION, VERIFIED_KIND: check}})  # fmt: skip
    expected = places(truth, "market")
    plain = Archive.open(root / "index", fitted).searcher()
    assert all(r.forced is None for r in plain.gather("market").regions)
    checked = Archive.open(root / "index", fitted, verify_regions=3).searcher()
    evidence = checked.gather("market", top=10)
    forced = [r for r in evidence.regions if r.forced is not None]
    assert len(forced) == 3
    scores = checked.score(evidence)
    for index, region in enumerate(evidence.regions):
        if region.forced is not None:
            true_place = any(region.file == p and abs(region.start - s) <= 0.5 for p, s in expected)
            assert scores[index] == pytest.approx(0.9933, abs=1e-3) if true_place else scores[index] < 0.01
    hits = checked.search("market", top=len(expected), threshold=0.5)
    assert found(hits, expected) and all(h.score > 0.99 for h in hits)
    # a scorer without a verified fusion, or an index without transcripts, cannot verify: a clear error
    from archive_search.errors import QueryError

    unfitted = replace(fitted, fusions={scorer: {"text": PRIOR_FUSION}})
    with pytest.raises(QueryError, match="fusion fitted for verified regions"):
        Archive.open(root / "index", unfitted, verify_regions=3).search("market")
    with pytest.raises(QueryError, match="index with transcripts"):
        Searcher(Archive.open(root / "index", fitted)._get_store(), fitted, channels=("vectors",), verify_regions=3).gather(
            "market", fuse_transcript=False)
