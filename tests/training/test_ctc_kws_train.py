"""CTC and ParallelKWS training on a tiny aligned corpus made in the test: every phoneme is a
tone of its own pitch, every word its dictionary phonemes in a row."""

import numpy as np
import pytest
import soundfile as sf
import torch

from archive_search.audio import SAMPLE_RATE
from archive_search.data.manifest import AlignedUnit, Utterance, write_manifest
from archive_search.embedders.ctc import load_ctc
from archive_search.embedders.g2p import word_phonemes
from archive_search.embedders.phonemes import SYMBOL_TO_ID
from archive_search.embedders.rerank import load_reranker
from archive_search.training.ctc import CTCTrainConfig, load_aligned, load_manifests, sample_segment, train_ctc
from archive_search.training.kws import (
    KWSTrainConfig,
    RegionSampler,
    cut_region,
    near_miss_phrase,
    near_miss_words,
    phoneme_distance,
    phrase_trials,
    train_kws,
)

VOCABULARY = ["cat", "dog", "sun", "tree", "moon", "fish", "bird", "red"]
PHONE_S = 0.07


def _utterance(words, index, folder, rng):
    pieces, word_units, phone_units, t = [np.zeros(int(0.2 * SAMPLE_RATE), np.float32)], [], [], 0.2
    for word in words:
        start = t
        for phone in word_phonemes(word):
            frequency = 150 + 45 * SYMBOL_TO_ID[phone]
            n = int(PHONE_S * SAMPLE_RATE)
            pieces.append((0.3 * np.sin(2 * np.pi * frequency * np.arange(n) / SAMPLE_RATE)).astype(np.float32))
            phone_units.append(AlignedUnit(phone, t, t + PHONE_S))
            t += PHONE_S
        word_units.append(AlignedUnit(word, start, t))
        gap = float(rng.uniform(0.05, 0.15))
        pieces.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
        t += gap
    samples = np.concatenate(pieces) + 0.003 * rng.standard_normal(sum(map(len, pieces))).astype(np.float32)
    path = folder / f"u{index}.wav"
    sf.write(path, samples, SAMPLE_RATE)
    return Utterance(f"u{index}", path.name, len(samples) / SAMPLE_RATE, " ".join(words), word_units, phone_units,
                     speaker="tone", source="test", split="train" if index < 10 else "valid")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    utterances = [_utterance(list(rng.choice(VOCABULARY, size=6)), i, folder, rng) for i in range(12)]
    path = folder / "manifest.jsonl"
    write_manifest(path, utterances)
    return path


def test_segments_are_whole_words_with_their_phonemes(manifest):
    items = load_aligned(load_manifests([manifest]))
    assert len(items) == 10
    rng = np.random.default_rng(0)
    for _ in range(20):
        samples, ids = sample_segment(items[0], rng, max_s=1.0)
        assert 0 < len(samples) / SAMPLE_RATE <= 1.0 + 0.3
        assert len(ids) >= 2 and all(i > 0 for i in ids)


def test_regions_hold_the_keyword_at_random_offsets(manifest):
    items = load_aligned(load_manifests([manifest]))
    rng = np.random.default_rng(1)
    offsets = []
    for _ in range(20):
        region = cut_region(items[0], 2, 2, rng)
        assert region.keyword == [w.label for w in items[0].words[2:4]]
        assert 0 <= region.keyword_start < region.keyword_end <= len(region.samples) / SAMPLE_RATE + 1e-6
        offsets.append(region.keyword_start)
        assert len(region.words) >= 2
    assert np.std(offsets) > 0.05


def test_near_miss_texts_are_close_but_different():
    assert "bat" in near_miss_words("cat") and "cat" not in near_miss_words("cat")
    rng = np.random.default_rng(0)
    phrase = near_miss_phrase(["red", "tree"], rng)
    assert phrase != ["red", "tree"] and 1 <= phoneme_distance(phrase, ["red", "tree"]) <= 2


def test_sampler_negatives_do_not_occur_in_the_region(manifest):
    sampler = RegionSampler(load_aligned(load_manifests([manifest])))
    rng = np.random.default_rng(2)
    for _ in range(30):
        region, hard, easy = sampler.draw(rng)
        for negative in (hard, easy):
            if negative is not None and negative != region.keyword:
                n = len(negative)
                assert all(region.words[i : i + n] != negative for i in range(len(region.words)))


def test_the_tight_ablation_trains_on_keyword_crops_not_regions(manifest, tmp_path):
    from archive_search.training.kws import build_feature_cache, build_kws, make_frontend_batch
    from tests.embedders.test_parallelkws import FakeFrontend

    items = load_aligned(load_manifests([manifest]))
    cache = build_feature_cache(items, FakeFrontend(), tmp_path / "cache")
    frames = {}
    for tight in (False, True):
        config = KWSTrainConfig(config="tiny", frontend="gse", batch_regions=24, augment_prob=0.0, tight_regions=tight)
        batch = make_frontend_batch(RegionSampler(items), cache, build_kws(config, None), np.random.default_rng(3), config)
        frames[tight] = batch[1].float().mean()
    # keywords of 1-4 tone words last 0.2-1.7 s; regions are 1-3 s with other words around
    assert frames[True] < 0.7 * frames[False]


def test_more_hard_negatives_add_distinct_near_misses_and_one_replays_the_default(manifest, tmp_path):
    from archive_search.training.kws import build_feature_cache, build_kws, make_frontend_batch
    from tests.embedders.test_parallelkws import FakeFrontend

    items = load_aligned(load_manifests([manifest]))
    cache = build_feature_cache(items, FakeFrontend(), tmp_path / "cache")
    model = build_kws(KWSTrainConfig(config="tiny", frontend="gse"), None)

    def batch(**options):  # -> g2p, text_lengths, labels, audio_index
        config = KWSTrainConfig(config="tiny", frontend="gse", batch_regions=12, augment_prob=0.0, audio_negatives=False, **options)
        out = make_frontend_batch(RegionSampler(items), cache, model, np.random.default_rng(5), config)
        return out[4], out[5], out[6], out[8]

    default, one, three = batch(), batch(hard_negatives=1), batch(hard_negatives=3)
    assert all(torch.equal(a, b) for a, b in zip(default, one))
    g2p, text_lengths, labels, audio_index = three
    assert int((labels == 1).sum()) == int((one[2] == 1).sum()) == 12  # one positive per region either way
    assert int((labels == 0).sum()) > int((one[2] == 0).sum())
    for region in range(12):  # a region's texts (positive, near misses, easy) are all different
        rows = (audio_index == region).nonzero().flatten().tolist()
        texts = {g2p[row, : int(text_lengths[row])].numpy().tobytes() for row in rows}
        assert len(texts) == len(rows)


def test_hard_negatives_beyond_one_are_refused_for_the_conformer_front_end(manifest, tmp_path):
    from click.testing import CliRunner

    from archive_search.cli.train import main

    result = CliRunner().invoke(main, ["kws", "--ctc", str(manifest), "--data", str(manifest), "--hard-negatives", "3",
                                       "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2 and "--hard-negatives" in result.output and not (tmp_path / "run").exists()


def test_ctc_then_kws_training_reduce_loss_resume_and_load(manifest, tmp_path):
    config = CTCTrainConfig(config="tiny", steps=40, batch_seconds=8.0, max_segment_s=2.0, lr=3e-3, warmup=0.1,
                            augment_prob=0.0, save_every=20, device="cpu")
    half = train_ctc(CTCTrainConfig(**{**config.__dict__, "steps": 20}), [manifest], tmp_path / "ctc")
    assert half.steps == 20
    result = train_ctc(config, [manifest], tmp_path / "ctc", resume=True, valid_manifests=[manifest], valid_splits=["valid"])
    assert result.steps == 40 and result.valid_per is not None
    rows = (tmp_path / "ctc" / "loss.csv").read_text().splitlines()
    losses = [float(r.split(",")[1]) for r in rows[1:41]]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert (tmp_path / "ctc" / "loss.png").is_file()
    load_ctc(result.checkpoint)

    kws_config = KWSTrainConfig(config="tiny", steps=30, batch_regions=6, save_every=15, device="cpu", augment_prob=0.0)
    kws = train_kws(kws_config, result.checkpoint, [manifest], tmp_path / "kws")
    assert kws.steps == 30
    rows = (tmp_path / "kws" / "loss.csv").read_text().splitlines()
    header = rows[0].split(",")
    bce = [float(r.split(",")[header.index("bce")]) for r in rows[1:]]
    assert np.mean(bce[-5:]) < np.mean(bce[:5])
    reranker = load_reranker(result.checkpoint, kws.checkpoint)
    trials = phrase_trials(load_aligned(load_manifests([manifest], ["valid"])), 5, tight=True)
    assert {t.subset for t in trials} >= {"all", "easy"}
    scores = reranker.score_text([trials[0].audio], [], trials[0].text)
    assert 0 <= scores[0] <= 1


def test_ctc_and_kws_train_with_loader_workers(manifest, tmp_path):
    config = CTCTrainConfig(config="tiny", steps=2, batch_seconds=4.0, max_segment_s=2.0, augment_prob=0.5, device="cpu",
                            workers=2)  # fmt: skip
    ctc = train_ctc(config, [manifest], tmp_path / "ctc")
    assert ctc.steps == 2 and np.isfinite(ctc.final_loss)
    kws_config = KWSTrainConfig(config="tiny", steps=2, batch_regions=3, device="cpu", augment_prob=0.5, workers=2)
    kws = train_kws(kws_config, ctc.checkpoint, [manifest], tmp_path / "kws")
    assert kws.steps == 2 and np.isfinite(kws.final_loss)


def test_gse_kws_training_on_cached_features_reduces_loss_and_resumes(manifest, tmp_path):
    from archive_search.training.kws import build_feature_cache, slice_region
    from tests.embedders.test_parallelkws import FakeFrontend

    calls = []

    class CountingFrontend(FakeFrontend):
        def __call__(self, clips):
            calls.append(len(clips))
            return super().__call__(clips)

    frontend = CountingFrontend()
    config = KWSTrainConfig(config="tiny", frontend="gse", steps=20, batch_regions=8, save_every=10, device="cpu",
                            augment_prob=0.5, lr=3e-3)  # fmt: skip
    half = train_kws(KWSTrainConfig(**{**config.__dict__, "steps": 10}), None, [manifest], tmp_path / "kws",
                     feature_cache=tmp_path / "cache", frontend=frontend)  # fmt: skip
    assert half.steps == 10 and sum(calls) == 2 * 10  # each utterance once clean, once augmented
    result = train_kws(config, None, [manifest], tmp_path / "kws", resume=True, feature_cache=tmp_path / "cache",
                       frontend=frontend)  # fmt: skip
    assert result.steps == 20 and sum(calls) == 2 * 10  # the second run reads the cache
    rows = (tmp_path / "kws" / "loss.csv").read_text().splitlines()
    header = rows[0].split(",")
    bce = [float(r.split(",")[header.index("bce")]) for r in rows[1:]]
    assert len(bce) == 20 and np.mean(bce[-5:]) < np.mean(bce[:5])
    reranker = load_reranker(None, result.checkpoint, frontend=FakeFrontend())
    assert 0 <= reranker.score_text([np.zeros(16000, np.float32)], [], "cat")[0] <= 1

    # a region's slice of the cached utterance frames matches the clip's own frame count
    items = load_aligned(load_manifests([manifest]))
    cache = build_feature_cache(items[:1], frontend, tmp_path / "cache")
    frames, mel, times = slice_region(cache[0], 0, 0.5, 1.7)
    assert np.all((times >= 0.5) & (times < 1.7)) and len(frames) == 15
    assert len(mel) // 8 + 1 == len(frames)


def test_whisper_kws_training_on_cached_frames_reduces_loss(manifest, tmp_path):
    from archive_search.embedders.whisper_encoder import WhisperKWSFrontend
    from archive_search.errors import DataError
    from archive_search.training.kws import build_feature_cache, slice_region
    from tests.embedders.test_parallelkws import FakeFrontend
    from tests.embedders.test_rerank import FakeWhisper

    frontend = WhisperKWSFrontend(encoder=FakeWhisper(dim=384), packed=False)
    config = KWSTrainConfig(config="tiny", frontend="whisper", steps=20, batch_regions=8, save_every=10, device="cpu",
                            augment_prob=0.5, lr=3e-3)  # fmt: skip
    result = train_kws(config, None, [manifest], tmp_path / "kws", feature_cache=tmp_path / "cache", frontend=frontend)
    rows = (tmp_path / "kws" / "loss.csv").read_text().splitlines()
    header = rows[0].split(",")
    bce = [float(r.split(",")[header.index("bce")]) for r in rows[1:]]
    assert len(bce) == 20 and np.mean(bce[-5:]) < np.mean(bce[:5])
    reranker = load_reranker(None, result.checkpoint, whisper=FakeWhisper(dim=384))
    assert reranker.name.startswith("parallelkws-whisper-")
    assert 0 <= reranker.score_text([np.zeros(16000, np.float32)], [], "cat")[0] <= 1

    # a region keeps the 20 ms states centred inside it, the two mel frames under each, and the
    # times of the model's 40 ms frames (every other state) for the PDA targets
    items = load_aligned(load_manifests([manifest]))
    cache = build_feature_cache(items[:1], frontend, tmp_path / "cache")
    frames, mel, times = slice_region(cache[0], 0, 0.5, 1.7, "whisper")
    assert len(frames) == 60 and len(mel) == 120 and len(times) == 30
    np.testing.assert_allclose(times[[0, -1]], [0.5, 1.66], atol=1e-6)
    # a gse cache is not read as whisper frames
    build_feature_cache(items, FakeFrontend(), tmp_path / "gse-cache")
    with pytest.raises(DataError, match="own --cache"):
        train_kws(config, None, [manifest], tmp_path / "kws2", feature_cache=tmp_path / "gse-cache", frontend=frontend)


def test_fsdd_evaluation_of_a_whisper_model_compares_its_own_frames_and_log_mel(tmp_path):
    from archive_search.embedders.parallelkws import KWSDims, ParallelKWS
    from archive_search.embedders.rerank import KWSReranker
    from archive_search.training.kws import evaluate_fsdd
    from tests.embedders.test_rerank import FakeWhisper
    from tests.fakes import tone_word, write_wav

    from tests.fakes import WORD_BANDS

    for digit, word in zip("01", list(WORD_BANDS)[:2]):  # two distinct tone "words" stand in for digits
        for take in range(2):
            write_wav(tmp_path / f"{digit}_spk_{take}.wav", tone_word(word))
    reranker = KWSReranker(ParallelKWS(KWSDims.tiny(frontend="whisper", frontend_dim=24, frontend_mels=80)), whisper=FakeWhisper())
    result = evaluate_fsdd(reranker, tmp_path, per_digit=2)
    assert result["clips"] == 4 and set(result) == {"text", "qbe_dtw_whisper", "qbe_dtw_fbank", "clips"}
    assert result["qbe_dtw_whisper"]["eer"] < 0.5  # the same tone word finds itself
