"""Cutting a stream of audio into fixed windows at several scales.

Each scale of length L has hop L * WINDOW_HOP_FRACTION, so a word of up to about 2/3 L lies
whole inside at least one window. The last window of each scale is aligned to the file's end
so the tail is covered; a file shorter than a scale gets one window covering the whole file
at the first scale longer than it, and no longer windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from archive_search.audio import SAMPLE_RATE, WINDOW_HOP_FRACTION, WINDOW_SCALES_S, AudioChunk

_EPS = 1e-6


def window_spans(duration: float, scales_s=WINDOW_SCALES_S, hop_fraction=WINDOW_HOP_FRACTION) -> np.ndarray:
    """All windows of a file of `duration` seconds: (N, 3) float64 rows of start, end, scale index."""
    rows = []
    covered = False
    for scale_index, length in enumerate(scales_s):
        if duration + _EPS < length:
            if not covered:
                rows.append((0.0, duration, scale_index))
                covered = True
            continue
        hop = length * hop_fraction
        count = int(np.floor((duration - length) / hop + _EPS)) + 1
        starts = np.arange(count) * hop
        rows.extend((s, s + length, scale_index) for s in starts)
        if starts[-1] + length < duration - _EPS:
            rows.append((duration - length, duration, scale_index))
        covered = covered or duration - length < _EPS
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


@dataclass
class WindowBatch:
    """Windows ready to embed: `spans` (N, 2) seconds relative to `samples`, `windows` (N, 3)
    absolute start, end, scale index in the file."""

    samples: np.ndarray
    spans: np.ndarray
    windows: np.ndarray


class StreamWindower:
    """Turns consecutive audio chunks into window batches without losing windows at chunk edges.

    It keeps the audio from the earliest window not yet cut (at most the largest scale plus a
    hop) and prepends it to the next chunk, so windows that straddle two chunks are cut from
    contiguous samples. Memory stays bounded by the chunk length plus the largest scale.
    """

    def __init__(self, scales_s=WINDOW_SCALES_S, hop_fraction=WINDOW_HOP_FRACTION, sample_rate: int = SAMPLE_RATE):
        self.scales = tuple(scales_s)
        self.hops = tuple(length * hop_fraction for length in self.scales)
        self.sample_rate = sample_rate
        self.next_index = [0] * len(self.scales)
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0.0  # seconds of the file at buffer[0]
        self.total = 0  # samples seen

    @property
    def duration(self) -> float:
        return self.total / self.sample_rate

    def push(self, samples: np.ndarray) -> WindowBatch | None:
        """Add the next chunk; returns the windows that now lie entirely inside the audio seen."""
        self.buffer = np.concatenate([self.buffer, samples]) if len(self.buffer) else samples
        self.total += len(samples)
        end = self.duration
        rows = []
        for s, (length, hop) in enumerate(zip(self.scales, self.hops)):
            k = self.next_index[s]
            while k * hop + length <= end + _EPS:
                rows.append((k * hop, k * hop + length, s))
                k += 1
            self.next_index[s] = k
        batch = self._batch(rows)
        self._trim()
        return batch

    def finish(self) -> WindowBatch | None:
        """The tail windows (end-aligned, or one whole-file window for short files)."""
        duration = self.duration
        if self.total == 0:
            return None
        rows = []
        covered = False
        for s, (length, hop) in enumerate(zip(self.scales, self.hops)):
            if duration + _EPS < length:
                if not covered:
                    rows.append((0.0, duration, s))
                    covered = True
                continue
            last_end = (self.next_index[s] - 1) * hop + length if self.next_index[s] else 0.0
            if last_end < duration - _EPS:
                rows.append((duration - length, duration, s))
            covered = covered or duration - length < _EPS
        return self._batch(rows)

    def _batch(self, rows: list) -> WindowBatch | None:
        if not rows:
            return None
        windows = np.array(rows, dtype=np.float64)
        spans = windows[:, :2] - self.buffer_start
        return WindowBatch(self.buffer, spans, windows)

    def _trim(self) -> None:
        # Keep audio from the earliest uncut window, and at least the largest scale for the tail.
        keep_from = min(k * hop for k, hop in zip(self.next_index, self.hops))
        keep_from = min(keep_from, self.duration - max(self.scales))
        drop = int(np.floor((keep_from - self.buffer_start) * self.sample_rate))
        if drop > 0:
            self.buffer = self.buffer[drop:]
            self.buffer_start += drop / self.sample_rate


def stream_windows(chunks: Iterable[AudioChunk], **kwargs) -> Iterator[WindowBatch]:
    """Window batches of a whole stream of chunks (see StreamWindower)."""
    windower = StreamWindower(**kwargs)
    for chunk in chunks:
        batch = windower.push(chunk.samples)
        if batch is not None:
            yield batch
    tail = windower.finish()
    if tail is not None:
        yield tail
