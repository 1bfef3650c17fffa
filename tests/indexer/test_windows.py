import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archive_search.audio import SAMPLE_RATE, WINDOW_HOP_FRACTION, WINDOW_SCALES_S, AudioChunk
from archive_search.indexer.windows import stream_windows, window_spans


def sort_rows(rows):
    rows = np.asarray(rows).reshape(-1, 3)
    return rows[np.lexsort((rows[:, 0], rows[:, 2]))]


@settings(max_examples=40, deadline=None)
@given(duration=st.floats(0.05, 12.0), chunk_s=st.floats(0.2, 5.0))
def test_streaming_cuts_the_same_windows_as_the_whole_file(duration, chunk_s):
    total = int(duration * SAMPLE_RATE)
    signal = np.arange(total, dtype=np.float32)  # sample value = its index, to check offsets
    step = int(chunk_s * SAMPLE_RATE)
    chunks = [AudioChunk(i / SAMPLE_RATE, signal[i : i + step]) for i in range(0, total, step)]
    rows = []
    for batch in stream_windows(chunks):
        assert len(batch.samples) <= step + int(max(WINDOW_SCALES_S) * 2 * SAMPLE_RATE)  # bounded memory
        for (start, end), window in zip(batch.spans, batch.windows):
            first = int(round(start * SAMPLE_RATE))
            assert first >= 0 and int(round(end * SAMPLE_RATE)) <= len(batch.samples)
            assert abs(batch.samples[first] - round(window[0] * SAMPLE_RATE)) <= 1  # right audio
            rows.append(window)
    np.testing.assert_allclose(sort_rows(rows), sort_rows(window_spans(total / SAMPLE_RATE)), atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(duration=st.floats(2.0, 30.0), word_start=st.floats(0.0, 1.0), word_length=st.floats(0.05, 1.0))
def test_every_short_word_lies_whole_in_a_window(duration, word_start, word_length):
    start = word_start * (duration - word_length)
    end = start + word_length
    spans = window_spans(duration)
    inside = (spans[:, 0] <= start + 1e-9) & (spans[:, 1] >= end - 1e-9)
    longest_whole = max(WINDOW_SCALES_S) * (1 - WINDOW_HOP_FRACTION)
    assert word_length > longest_whole or inside.any()
    # and the tightest such window is not much longer than the word
    if word_length <= WINDOW_SCALES_S[0] * (1 - WINDOW_HOP_FRACTION):
        assert (spans[inside, 1] - spans[inside, 0]).min() == pytest.approx(WINDOW_SCALES_S[0])


def test_short_file_gets_one_window_covering_it():
    np.testing.assert_allclose(window_spans(0.3), [[0.0, 0.3, 0]])
    spans = window_spans(0.8)  # longer than the first scale only
    assert (spans[:, 1] <= 0.8 + 1e-9).all()
    assert [0.0, 0.8, 1] in spans.tolist()


def test_tail_is_covered_at_every_scale():
    spans = window_spans(7.3)
    for scale_index, _ in enumerate(WINDOW_SCALES_S):
        assert spans[spans[:, 2] == scale_index, 1].max() == 7.3
