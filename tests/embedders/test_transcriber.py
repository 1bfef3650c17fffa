"""Packing short clips into shared transcription passes, cutting streams into whisper pieces, and streaming long files."""

import numpy as np
import pytest

from archive_search.audio import SAMPLE_RATE
from archive_search.embedders.transcriber import PACK_GAP_S, PIECE_S, PieceCutter, StreamingTranscript, transcribe_packed
from archive_search.embedders.whisper_encoder import FRAME_SAMPLES
from tests.fakes import FakeTranscriber, FakeWhisperTranscriber, episode


def tokens(words):
    return [w.token for w in words]


def test_packed_clips_get_their_own_words_with_their_own_times():
    clips, truths = [], []
    for i, words in enumerate([["apple"], ["river", "garden"], ["planet"], ["coffee", "window", "silver"]]):
        samples, times = episode(words, seed=i)
        clips.append(samples)
        truths.append(times)
    transcriber = FakeTranscriber()
    packed = transcribe_packed(transcriber.transcribe, clips, pack_seconds=10.0)
    alone = [FakeTranscriber().transcribe(clip) for clip in clips]
    assert [tokens(w) for w in packed] == [[t[0] for t in truth] for truth in truths]
    for words, single in zip(packed, alone):
        assert [t for w in words for t in (w.start, w.end)] == pytest.approx([t for w in single for t in (w.start, w.end)], abs=0.011)
    # 4 clips of 1-3 s (plus gaps) in 10 s passes: 2 passes, not 4
    assert transcriber.calls == 2
    # each gap is PACK_GAP_S plus what puts the next clip on a 20 ms boundary
    gaps = sum(len(c) for c in clips) / SAMPLE_RATE + PACK_GAP_S * len(clips)
    assert gaps <= transcriber.seconds < gaps + FRAME_SAMPLES / SAMPLE_RATE * len(clips)


def test_a_clip_longer_than_a_pack_is_transcribed_alone():
    long_clip, _ = episode(["apple", "river", "market", "window", "garden"], seed=3)
    short_clip, _ = episode(["planet"], seed=4)
    transcriber = FakeTranscriber()
    packed = transcribe_packed(transcriber.transcribe, [long_clip, short_clip], pack_seconds=2.0)
    assert tokens(packed[0]) == ["apple", "river", "market", "window", "garden"]
    assert tokens(packed[1]) == ["planet"]


class SegmentingTranscriber(FakeTranscriber):
    """A segment per word, as whisper makes a segment per phrase."""

    def segments(self, samples):
        return [[word] for word in self.transcribe(samples)]


@pytest.mark.parametrize("chunk_s", [0.7, 1.3, 2.9])
def test_streamed_chunks_give_the_words_of_the_whole_file(chunk_s):
    words = ["apple", "river", "market", "window", "garden", "silver", "planet", "coffee"]
    samples, truth = episode(words, seed=5)
    streaming = StreamingTranscript(SegmentingTranscriber())
    step = int(chunk_s * SAMPLE_RATE)
    for first in range(0, len(samples), step):
        streaming.push(samples[first : first + step])
    result = streaming.finish()
    assert tokens(result) == words
    assert [w.start for w in result] == pytest.approx([t[1] for t in truth], abs=0.011)
    assert [w.end for w in result] == pytest.approx([t[2] for t in truth], abs=0.011)


def test_streaming_carries_only_the_last_segment():
    samples, _ = episode(["apple", "river", "market", "window"], seed=6)
    streaming = StreamingTranscript(SegmentingTranscriber())
    streaming.push(samples)
    assert tokens(streaming.words) == ["apple", "river", "market"]
    assert len(streaming._carry) < 1.0 * SAMPLE_RATE
    assert tokens(streaming.finish()) == ["apple", "river", "market", "window"]


def test_pieces_tile_the_stream_and_end_in_its_quiet_moments():
    rng = np.random.default_rng(0)
    loud = rng.normal(0, 0.3, 95 * SAMPLE_RATE).astype(np.float32)
    quiet = [27.0, 55.5, 83.0]  # seconds of 0.3 s near-silence, one in each piece's last 6 s
    for second in quiet:
        loud[int(second * SAMPLE_RATE) : int((second + 0.3) * SAMPLE_RATE)] *= 0.001
    cutter = PieceCutter()
    pieces = [piece for first in range(0, len(loud), 7_919) for piece in cutter.push(loud[first : first + 7_919])]
    pieces += cutter.finish()
    assert np.array_equal(np.concatenate([p.samples for p in pieces]), loud)
    assert [p.start for p in pieces] == list(np.cumsum([0] + [len(p.samples) for p in pieces[:-1]]))
    assert all(len(p.samples) <= PIECE_S * SAMPLE_RATE for p in pieces)
    assert all(p.start % FRAME_SAMPLES == 0 for p in pieces)
    cuts = [p.start / SAMPLE_RATE for p in pieces[1:]]
    assert len(cuts) == len(quiet)
    for cut, second in zip(cuts, quiet):
        assert second <= cut <= second + 0.3


def test_packs_go_to_a_batch_transcriber_in_one_call():
    clips = [episode([word], seed=i)[0] for i, word in enumerate(["apple", "river", "planet", "coffee", "window"])]

    class Batching(FakeTranscriber):
        batches: list[int] = []

        def transcribe_many(self, signals):
            self.batches.append(len(signals))
            return [self.transcribe(signal) for signal in signals]

    transcriber = Batching()
    packed = transcribe_packed(transcriber, clips, pack_seconds=4.0)
    assert [tokens(words) for words in packed] == [["apple"], ["river"], ["planet"], ["coffee"], ["window"]]
    assert len(transcriber.batches) == 1 and transcriber.batches[0] > 1


def test_streaming_with_a_piece_transcriber_keeps_absolute_times():
    words = ["apple", "river", "market", "window", "garden", "silver", "planet", "coffee"] * 8
    samples, truth = episode(words, gap=0.6, seed=8)
    assert len(samples) > 2 * PIECE_S * SAMPLE_RATE

    class Pieces(FakeWhisperTranscriber):
        def transcribe_pieces(self, pieces):
            return [self.transcribe(piece.samples) for piece in pieces]

    streaming = StreamingTranscript(Pieces())
    for first in range(0, len(samples), 60 * SAMPLE_RATE):
        streaming.push(samples[first : first + 60 * SAMPLE_RATE])
    result = streaming.finish()
    assert tokens(result) == words
    assert [w.start for w in result] == pytest.approx([t[1] for t in truth], abs=0.011)


def test_whisper_finds_the_spoken_words_likelier_than_others():
    from archive_search.embedders.speech_synthesis import speak
    from archive_search.embedders.transcriber import WhisperTranscriber

    clip = speak("the volcano", "en-us", 150)
    transcriber = WhisperTranscriber(threads=1, workers=1)
    said, other = transcriber.query_likelihood([clip, clip], "volcano"), transcriber.query_likelihood([clip], "umbrella")
    assert said.shape == (2, 4) and np.allclose(said[0], said[1])  # each clip is verified on its own
    assert said[0, 0] > other[0, 0] + 2  # mean log-probability of the forced tokens
    assert said[0, 3] > other[0, 3]
    assert transcriber.query_likelihood([], "volcano").shape == (0, 4)
