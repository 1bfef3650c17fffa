"""Synthetic corpus planning and rendering: vocabulary coverage, splits, determinism, cache, episodes."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from archive_search.audio import SAMPLE_RATE
from archive_search.cli.data import main as data_cli
from archive_search.data import synth
from archive_search.data.manifest import read_manifest

ENGINES = ("espeak", "flite")  # the fast engines keep these tests short


def test_plan_is_deterministic_and_seed_dependent():
    a = synth.plan_corpus(0.1, seed=7, engines=ENGINES)
    b = synth.plan_corpus(0.1, seed=7, engines=ENGINES)
    c = synth.plan_corpus(0.1, seed=8, engines=ENGINES)
    assert a.clips == b.clips and a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


def test_plan_coverage_splits_and_oov():
    plan = synth.plan_corpus(0.3, seed=1, min_instances=5)
    oov = set(synth.oov_words())
    assert len(oov) > 500
    function_words = set(synth.FUNCTION_WORDS)
    instances: dict[str, int] = defaultdict(int)
    speakers: dict[str, set[str]] = defaultdict(set)
    for clip in plan.clips:
        assert 1 <= len(clip.words) <= synth.MAX_WORDS
        assert clip.voice.held_out == (clip.split == "test")
        if clip.split == "train":
            assert not oov & set(clip.words), clip
            for word in clip.words:
                instances[word] += 1
                speakers[word].add(clip.voice.speaker)
    content = [w for w in plan.vocabulary if w not in function_words]
    assert len(content) > 50
    for word in content:
        assert instances[word] >= 5, word
        assert len(speakers[word]) >= 4, (word, speakers[word])
    test_words = {w for clip in plan.clips if clip.split == "test" for w in clip.words}
    assert plan.oov and set(plan.oov) <= test_words
    # frequent and rare words are mixed
    frequent = set(synth.frequent_words()[:5000])
    assert 0.2 < sum(w in frequent for w in content) / len(content) < 0.8


def _audio_hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.glob("audio/*/*.flac"))}


def test_corpus_renders_caches_and_repeats(tmp_path):
    first = tmp_path / "a"
    report = synth.generate_corpus(first, hours=0.01, seed=5, jobs=2, engines=ENGINES)
    assert report.clips > 5 and report.shards_made >= 1 and report.shards_cached == 0
    utterances = read_manifest(first / "manifest.jsonl")
    assert len(utterances) == report.clips
    for utterance in utterances:
        samples, rate = sf.read(utterance.audio_path(first))
        assert rate == SAMPLE_RATE
        assert len(samples) / rate == pytest.approx(utterance.duration, abs=1e-3)
        assert [w.label for w in utterance.words] == utterance.text.split()
        assert utterance.words[-1].end <= utterance.duration + 1e-6
        assert np.abs(samples).max() > 0.1
    assert (first / "oov_words.txt").read_text().split() == list(synth.oov_words())
    assert synth.training_vocabulary(first) == {
        w.label for u in utterances if u.split == "train" for w in u.words
    }

    again = synth.generate_corpus(first, hours=0.01, seed=5, jobs=2, engines=ENGINES)
    assert again.shards_made == 0 and again.shards_cached == report.shards_made
    assert read_manifest(first / "manifest.jsonl") == utterances

    second = tmp_path / "b"
    synth.generate_corpus(second, hours=0.01, seed=5, jobs=1, engines=ENGINES)
    assert _audio_hashes(first) == _audio_hashes(second)
    assert read_manifest(second / "manifest.jsonl") == utterances


def test_cli_synth_json(tmp_path):
    result = CliRunner().invoke(
        data_cli, ["synth", "--hours", "0.003", "--out", str(tmp_path), "--engine", "espeak", "--json"]
    )
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[-1]
    assert '"clips"' in line and '"audio_hours_per_minute"' in line
    assert (tmp_path / "manifest.jsonl").is_file()


def test_episode_is_long_multi_speaker_and_timed(tmp_path):
    report = synth.generate_episodes(tmp_path, minutes=0.4, count=1, seed=2)
    assert report.episodes == 1
    (episode,) = read_manifest(tmp_path / "manifest.jsonl")
    info = sf.info(str(episode.audio_path(tmp_path)))
    assert info.samplerate == SAMPLE_RATE
    assert info.duration == pytest.approx(episode.duration, abs=1e-3)
    assert episode.duration >= 0.4 * 60
    assert len({turn["speaker"] for turn in episode.augment["turns"]}) >= 1
    assert len(episode.speaker.split("+")) >= 2
    starts = [w.start for w in episode.words]
    assert starts == sorted(starts) and episode.words[-1].end <= episode.duration
    assert len(episode.words) > 30
    # speech lies where the words say: the middle of each word is louder than the pauses
    samples, _ = sf.read(str(episode.audio_path(tmp_path)), dtype="float32")
    inside = np.concatenate([samples[int(w.start * SAMPLE_RATE) : int(w.end * SAMPLE_RATE)] for w in episode.words])
    mask = np.ones(len(samples), bool)
    for w in episode.words:
        mask[int(w.start * SAMPLE_RATE) : int(w.end * SAMPLE_RATE)] = False
    assert np.sqrt((inside**2).mean()) > 5 * np.sqrt((samples[mask] ** 2).mean())
