"""JMCL training on a toy corpus made in the test: batches, window cutting, loss goes down, resume."""

import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from archive_search.audio import SAMPLE_RATE, WINDOW_SCALES_S
from archive_search.cli.train import main
from archive_search.data.manifest import AlignedUnit, Utterance, write_manifest
from archive_search.embedders.jmcl import build_model, read_jmcl
from archive_search.training.jmcl import (
    Instance,
    JMCLTrainConfig,
    WordBank,
    batch_loss,
    cut_instance,
    load_manifests,
    sample_batch,
    train_jmcl,
)

# Each toy "word" is a tone pattern: (start Hz, end Hz, seconds).
WORDS = {"alpha": (300, 600, 0.45), "bravo": (900, 900, 0.35), "charlie": (1500, 700, 0.55), "delta": (400, 400, 0.3)}


def _toy_corpus(folder, n_utterances=12, seed=0):
    rng = np.random.default_rng(seed)
    utterances = []
    for number in range(n_utterances):
        pieces, words, t = [np.zeros(int(0.2 * SAMPLE_RATE))], [], 0.2
        for label in rng.permutation(list(WORDS))[:3]:
            f0, f1, seconds = WORDS[label]
            seconds *= rng.uniform(0.85, 1.15)
            n = int(seconds * SAMPLE_RATE)
            freq = np.linspace(f0, f1, n) * rng.uniform(0.95, 1.05)
            pieces.append(0.3 * np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE))
            words.append(AlignedUnit(label, round(t, 4), round(t + n / SAMPLE_RATE, 4)))
            gap = rng.uniform(0.05, 0.3)
            pieces.append(np.zeros(int(gap * SAMPLE_RATE)))
            t += n / SAMPLE_RATE + int(gap * SAMPLE_RATE) / SAMPLE_RATE
        audio = np.concatenate(pieces).astype(np.float32) + 0.003 * rng.normal(size=sum(map(len, pieces))).astype(np.float32)
        name = f"u{number}.wav"
        sf.write(folder / name, audio, SAMPLE_RATE)
        utterances.append(Utterance(f"u{number}", name, len(audio) / SAMPLE_RATE, " ".join(w.label for w in words), words))
    write_manifest(folder / "manifest.jsonl", utterances)
    return folder / "manifest.jsonl"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _toy_corpus(tmp_path_factory.mktemp("toy"))


def test_word_bank_groups_instances_by_pronunciation(corpus):
    bank = WordBank.from_utterances(load_manifests([corpus]), max_phrase_words=1)
    assert set(bank.words) == set(WORDS)
    assert len(bank.classes) == 4 and sum(len(rows) for rows in bank.classes.values()) == 36
    assert ("B", "R", "AA", "V", "OW") in bank.classes
    phrases = WordBank.from_utterances(load_manifests([corpus]), max_phrase_words=2)
    assert len(phrases.instances) > len(bank.instances)


def test_speed_copies_are_instances_of_their_source_token_not_new_tokens(corpus):
    originals = load_manifests([corpus])
    # two copies of every utterance, marked as `archive-data speed` marks its copies (same timing
    # here, so that every instance is kept in each copy)
    copies = [(replace(u, id=f"{u.id}-copy{n}", augment={"source": u.id}), root) for u, root in originals for n in (1, 2)]
    alone = WordBank.from_utterances(originals, max_phrase_words=2)
    both = WordBank.from_utterances(originals + copies, max_phrase_words=2)
    assert len(both.instances) == 3 * len(alone.instances)
    # phrases spoken once have three instances with their copies, but still one token: no class
    said_once = [text for text, n in Counter(i.text for i in alone.instances).items() if n == 1]
    assert said_once and set(both.classes) == set(alone.classes)
    assert all(len(both.classes[key]) == 3 * len(rows) for key, rows in alone.classes.items())
    # a recording listed twice without a source mark counts twice, as it did for the shipped runs
    listed_twice = WordBank.from_utterances(originals + originals, max_phrase_words=2)
    assert len(listed_twice.classes) > len(alone.classes)


def test_windows_are_indexer_scales_holding_the_word(corpus):
    bank = WordBank.from_utterances(load_manifests([corpus]), max_phrase_words=1)
    rng = np.random.default_rng(0)
    for row in range(len(bank.instances)):
        instance = bank.instances[row]
        samples, span = cut_instance(bank, instance, "window", rng)
        length = span[1] - span[0]
        assert min(abs(length - s) for s in WINDOW_SCALES_S) < 1e-3 or span[1] >= len(samples) / SAMPLE_RATE - 1e-3
        clip, none = cut_instance(bank, instance, "clip", rng)
        assert none is None and abs(len(clip) / SAMPLE_RATE - instance.duration) < 0.11


def test_batches_are_n_words_by_m_instances(corpus):
    bank = WordBank.from_utterances(load_manifests([corpus]), max_phrase_words=1)
    batch = sample_batch(bank, 3, 2, np.random.default_rng(1))
    assert (batch.n_words, batch.n_instances, len(batch.clips), len(batch.phonemes)) == (3, 2, 6, 3)
    assert len(set(batch.phonemes)) == 3


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(corpus):
    torch.manual_seed(0)
    bank = WordBank.from_utterances(load_manifests([corpus]), max_phrase_words=1)
    batch = sample_batch(bank, 4, 3, np.random.default_rng(2), window_prob=0.0, clip_prob=1.0)
    model = build_model("tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = float(batch_loss(model, batch).total.detach())
    for _ in range(30):
        optimizer.zero_grad()
        batch_loss(model, batch).total.backward()
        optimizer.step()
    assert float(batch_loss(model, batch).total.detach()) < 0.8 * before


def test_training_checkpoints_and_resumes(corpus, tmp_path):
    config = JMCLTrainConfig(config="tiny", steps=6, batch_words=3, instances=2, save_every=3, log_every=1,
                             augment_prob=0.0, device="cpu")  # fmt: skip
    result = train_jmcl(config, [corpus], tmp_path / "run")
    assert result.steps == 6 and (tmp_path / "run" / "loss.png").is_file()
    model, extra = read_jmcl(result.checkpoint)
    assert extra["step"] == 6 and extra["train"]["config"] == "tiny"
    rows = (tmp_path / "run" / "loss.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("step,loss")
    # Resuming with more steps continues from step 6 and appends to the log.
    longer = JMCLTrainConfig(**{**config.__dict__, "steps": 8})
    resumed = train_jmcl(longer, [corpus], tmp_path / "run", resume=True)
    assert resumed.steps == 8
    assert len((tmp_path / "run" / "loss.csv").read_text().splitlines()) == 9
    stages = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]
    assert [stage["from_step"] for stage in stages] == [0, 6]


def test_resumed_run_matches_an_uninterrupted_one(corpus, tmp_path):
    base = dict(config="tiny", batch_words=3, instances=2, save_every=2, log_every=1, augment_prob=0.0, device="cpu")
    straight = train_jmcl(JMCLTrainConfig(steps=4, **base), [corpus], tmp_path / "a")
    # A run stopped after its step-2 checkpoint, then resumed to step 4, lands on the same weights.
    train_jmcl(JMCLTrainConfig(steps=4, **base), [corpus], tmp_path / "c", stop_at=2)
    resumed = train_jmcl(JMCLTrainConfig(steps=4, **base), [corpus], tmp_path / "c", resume=True)
    a, _ = read_jmcl(straight.checkpoint)
    c, _ = read_jmcl(resumed.checkpoint)
    for key, tensor in a.state_dict().items():
        torch.testing.assert_close(c.state_dict()[key], tensor, atol=1e-5, rtol=1e-4)


def test_training_with_loader_workers_is_reproducible(corpus, tmp_path):
    base = dict(config="tiny", steps=3, batch_words=3, instances=2, save_every=3, log_every=1, augment_prob=0.0,
                device="cpu", workers=2)  # fmt: skip
    runs = [train_jmcl(JMCLTrainConfig(**base), [corpus], tmp_path / name) for name in ("a", "b")]
    assert [run.steps for run in runs] == [3, 3] and np.isfinite(runs[0].final_loss)
    a, _ = read_jmcl(runs[0].checkpoint)
    b, _ = read_jmcl(runs[1].checkpoint)
    for key, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], tensor)


def test_cli_trains_and_prints_json(corpus, tmp_path):
    result = CliRunner().invoke(
        main, ["jmcl", "--config", "tiny", "--data", str(corpus), "--out", str(tmp_path / "cli"), "--steps", "2",
               "--batch-words", "2", "--instances", "2", "--augment-prob", "0", "--device", "cpu", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["n_classes"] >= 2
    bad = CliRunner().invoke(main, ["jmcl", "--data", str(corpus), "--out", str(tmp_path / "x"), "--instances", "1"])
    assert bad.exit_code != 0 and "instances" in bad.output


def test_eval_command_reports_ap_views_and_speed(corpus, tmp_path):
    from archive_search.embedders.jmcl import save_jmcl

    checkpoint = save_jmcl(tmp_path / "tiny.pt", build_model("tiny"))
    result = CliRunner().invoke(
        main, ["jmcl-eval", "--checkpoint", str(checkpoint), "--data", str(corpus), "--split", "train",
               "--train-data", str(corpus), "--speed-seconds", "3", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    scores = report["word_discrimination"][str(corpus)]
    # Only alpha and charlie last 0.5-2 s; all toy words are in the training vocabulary.
    assert scores["n_words"] == 2 and 0.0 < scores["acoustic"]["all"]["ap"] <= 1.0
    assert scores["cross"]["iv"]["ap"] > 0 and scores["acoustic"]["oov"] is None
    assert report["speed"]["windows"] > 0 and report["speed"]["real_time_factor"] > 0


def test_export_writes_a_half_precision_checkpoint_that_embeds_alike(tmp_path):
    from archive_search.embedders.jmcl import load_jmcl, save_jmcl

    torch.manual_seed(0)
    source = save_jmcl(tmp_path / "last.pt", build_model("tiny"), extra={"step": 3})
    result = CliRunner().invoke(main, ["jmcl-export", "--checkpoint", str(source), "--out", str(tmp_path / "ship.pt")])
    assert result.exit_code == 0, result.output
    _, extra = read_jmcl(tmp_path / "ship.pt")
    assert extra["step"] == 3 and extra["exported_from"] == str(source)
    clip = [np.sin(np.arange(16000) / 7.0).astype(np.float32)]
    full, _ = load_jmcl(source, device="cpu")
    half, _ = load_jmcl(tmp_path / "ship.pt", device="cpu")
    assert float((full.embed_clips(clip) @ half.embed_clips(clip).T)[0, 0]) > 0.999


class FakeWhisper:
    """Stands in for whisper tiny.en: one 384-d row per 20 ms from a fixed projection of that
    frame's spectrum, plus an offset shared by the whole input (as whisper's states carry)."""

    calls = 0

    def __init__(self, threads=1, **_):
        self.projection = np.random.default_rng(0).standard_normal((161, 384)).astype(np.float32)

    def frames(self, samples):
        FakeWhisper.calls += 1
        samples = np.asarray(samples, dtype=np.float32)
        count = -(-len(samples) // 320)
        padded = np.pad(samples, (0, count * 320 - len(samples))).reshape(count, 320)
        spectrum = np.abs(np.fft.rfft(padded, axis=1)).astype(np.float32)
        return spectrum @ self.projection + 5.0 * float(np.abs(samples).mean())


@pytest.fixture
def fake_whisper(monkeypatch, tmp_path):
    """A tiny whisper-front-end config ("tiny-whisper") reading FakeWhisper frames, and a fresh cache."""
    import dataclasses

    from archive_search.embedders import jmcl, whisper_encoder

    dims = dataclasses.replace(jmcl.CONFIGS["tiny"], config="tiny-whisper", audio_frontend="whisper", frontend_stride=2)
    monkeypatch.setitem(jmcl.CONFIGS, "tiny-whisper", dims)
    monkeypatch.setattr(whisper_encoder, "WhisperEncoder", FakeWhisper)
    monkeypatch.setenv("ARCHIVE_SEARCH_CACHE", str(tmp_path / "cache"))
    FakeWhisper.calls = 0
    return dims


def test_whisper_front_end_windows_read_their_utterance_frames(corpus, fake_whisper, tmp_path):
    from archive_search.training.jmcl import attach_frontend_frames, batch_features

    bank = WordBank.from_utterances(load_manifests([corpus]), max_phrase_words=1)
    model = build_model("tiny-whisper")
    attach_frontend_frames(model, bank, tmp_path / "frames")
    assert len(bank.frames) == len(bank.audio) and FakeWhisper.calls == 2 * len(bank.audio)
    clean, same = bank.frames[0]
    assert clean.dtype == np.float16 and clean.shape == (-(-len(bank.audio[0]) // 320), 384)
    np.testing.assert_array_equal(clean, same)  # no augmentation chain given: both copies clean
    batch = sample_batch(bank, 4, 3, np.random.default_rng(5), window_prob=0.5, clip_prob=0.3)
    features, spans = batch_features(model, bank, batch)
    clips = [row for row, source in enumerate(batch.sources) if source is None]
    assert clips and len(clips) < len(batch.clips)
    for row, source in enumerate(batch.sources):
        if source is None:  # a clip is encoded alone, as a query clip is
            assert spans[row] is None and features[row].shape[0] == -(-len(batch.clips[row]) // 320)
            assert abs(float(features[row].mean())) < 1e-3  # standardised over the clip
            continue
        utterance, first, _ = source
        start = int(round(first / SAMPLE_RATE / 0.02))
        np.testing.assert_array_equal(features[row].numpy(), bank.frames[utterance][0][start : start + len(features[row])])
        # the span still points at the same stretch of the utterance, now from the first frame
        assert start * 0.02 + spans[row][0] == pytest.approx(first / SAMPLE_RATE + batch.spans[row][0])
        assert start * 0.02 + spans[row][1] == pytest.approx(first / SAMPLE_RATE + batch.spans[row][1])
    # a second bank over the same audio reads the frames back from disk
    again = WordBank.from_utterances(load_manifests([corpus]), max_phrase_words=1)
    calls = FakeWhisper.calls
    attach_frontend_frames(model, again, tmp_path / "frames")
    assert FakeWhisper.calls == calls
    np.testing.assert_array_equal(again.frames[3][0], bank.frames[3][0])


@pytest.mark.parametrize("workers", [0, 2])
def test_whisper_front_end_trains_and_round_trips(corpus, fake_whisper, tmp_path, workers):
    config = JMCLTrainConfig(config="tiny-whisper", steps=3, batch_words=3, instances=2, save_every=3, log_every=1,
                             augment_prob=0.5, device="cpu", workers=workers)  # fmt: skip
    result = train_jmcl(config, [corpus], tmp_path / "run")
    assert result.steps == 3 and np.isfinite(result.final_loss)
    assert len(list((tmp_path / "cache" / "jmcl-frames").glob("whisper-*.npz"))) == 12
    model, _ = read_jmcl(result.checkpoint)
    assert model.dims.audio_frontend == "whisper" and model.dims.frame_period_s == pytest.approx(0.04)


def test_init_starts_a_new_run_from_trained_weights(corpus, tmp_path):
    base = dict(config="tiny", batch_words=3, instances=2, save_every=2, log_every=1, augment_prob=0.0, device="cpu")
    trained = train_jmcl(JMCLTrainConfig(steps=4, **base), [corpus], tmp_path / "a")
    start, _ = read_jmcl(trained.checkpoint)
    # An lr of zero keeps the weights, so the new run's checkpoint holds exactly what it started from.
    tuned = train_jmcl(JMCLTrainConfig(steps=2, lr=0.0, **base), [corpus], tmp_path / "b", init=trained.checkpoint)
    after, _ = read_jmcl(tuned.checkpoint)
    for key, tensor in start.state_dict().items():
        torch.testing.assert_close(after.state_dict()[key], tensor)
    # Without --init the same run starts from new weights, so the check above can fail.
    fresh, _ = read_jmcl(train_jmcl(JMCLTrainConfig(steps=2, lr=0.0, **base), [corpus], tmp_path / "c").checkpoint)
    assert any(not torch.equal(fresh.state_dict()[key], tensor) for key, tensor in start.state_dict().items())
    stage = json.loads((tmp_path / "b" / "run.json").read_text())["stages"][0]
    assert stage["init"] == str(trained.checkpoint) and stage["from_step"] == 0


def test_init_refuses_a_checkpoint_of_another_config(corpus, tmp_path):
    base = dict(batch_words=3, instances=2, save_every=2, log_every=1, augment_prob=0.0, device="cpu")
    trained = train_jmcl(JMCLTrainConfig(config="tiny", steps=2, **base), [corpus], tmp_path / "a")
    result = CliRunner().invoke(
        main, ["jmcl", "--config", "fast", "--data", str(corpus), "--out", str(tmp_path / "b"), "--steps", "1",
               "--init", str(trained.checkpoint), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code != 0 and "cannot start a `fast` run" in result.output
