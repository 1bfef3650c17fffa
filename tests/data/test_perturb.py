import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from archive_search.audio import SAMPLE_RATE
from archive_search.cli.data import main as data_cli
from archive_search.data.manifest import AlignedUnit, Utterance, read_manifest, write_manifest
from archive_search.data.perturb import speed_copies, speed_perturb
from archive_search.errors import DataError

TONE_HZ, START_S, END_S, LENGTH_S = 1000.0, 0.5, 0.8, 1.2


def _tone_utterance(folder, name="tone"):
    """A 1 kHz tone standing in for a word at [0.5, 0.8) s in 1.2 s of silence."""
    samples = np.zeros(int(LENGTH_S * SAMPLE_RATE), dtype=np.float32)
    t = np.arange(int((END_S - START_S) * SAMPLE_RATE)) / SAMPLE_RATE
    samples[int(START_S * SAMPLE_RATE) : int(END_S * SAMPLE_RATE)] = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    sf.write(str(folder / f"{name}.wav"), samples, SAMPLE_RATE)
    word = AlignedUnit("beep", START_S, END_S)
    return Utterance(id=name, audio=f"{name}.wav", duration=LENGTH_S, text="beep", words=[word], phones=[word])


def _loud_span(samples):
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    return loud[0] / SAMPLE_RATE, loud[-1] / SAMPLE_RATE


def test_speed_copy_moves_the_audio_and_its_alignment_together(tmp_path):
    original = _tone_utterance(tmp_path)
    (copy,) = speed_copies(original, tmp_path, [1.25], tmp_path / "out")
    samples, rate = sf.read(str(tmp_path / "out" / copy.audio), dtype="float32")
    assert rate == SAMPLE_RATE and copy.id == "tone-sp1.25" and copy.augment == {"speed": 1.25, "source": "tone"}
    assert abs(len(samples) / SAMPLE_RATE - copy.duration) < 0.002 and abs(copy.duration - LENGTH_S / 1.25) < 0.002
    start, end = _loud_span(samples)
    assert abs(copy.words[0].start - START_S / 1.25) < 1e-3 and abs(copy.phones[0].end - END_S / 1.25) < 1e-3
    assert abs(start - copy.words[0].start) < 0.01 and abs(end - copy.words[0].end) < 0.01
    # tempo and pitch change together, as a faster speaker's would
    burst = samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
    peak_hz = np.argmax(np.abs(np.fft.rfft(burst))) * SAMPLE_RATE / len(burst)
    assert abs(peak_hz - TONE_HZ * 1.25) < 20


def test_unreadable_audio_is_reported_and_the_rest_carries_on(tmp_path):
    good = _tone_utterance(tmp_path, "good")
    broken = Utterance(id="broken", audio="missing.wav", duration=1.0, text="gone")
    result = speed_perturb([(broken, tmp_path), (good, tmp_path)], (0.9, 1.1), tmp_path / "out")
    assert [u.id for u in result.utterances] == ["good-sp0.9", "good-sp1.1"]
    assert [f.utterance_id for f in result.failures] == ["broken"] and "missing.wav" in result.failures[0].reason


def test_a_factor_that_is_not_positive_is_refused_before_any_work(tmp_path):
    with pytest.raises(DataError, match="positive"):
        speed_perturb([(_tone_utterance(tmp_path), tmp_path)], (1.1, 0.0), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_writes_a_manifest_of_the_default_factors(tmp_path):
    manifest = tmp_path / "corpus.jsonl"
    write_manifest(manifest, [_tone_utterance(tmp_path)])
    out = tmp_path / "speed"
    result = CliRunner().invoke(data_cli, ["speed", str(manifest), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["utterances"] == 2
    copies = read_manifest(out / "manifest.jsonl")
    assert sorted(u.augment["speed"] for u in copies) == [0.9, 1.1]
    assert all((out / u.audio).is_file() for u in copies)
