"""The demo: build a small spoken archive with espeak-ng, index it, and search it.

`python -m archive_search.demo [--out DIR]` (run by scripts/demo.sh). Everything is made and
read locally; nothing is downloaded. Each episode is spoken by another voice; keywords are
synthesized as their own pieces so their times in the episode are known exactly, which
lets the demo say whether each search found the right place.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from archive_search.audio import SAMPLE_RATE
from archive_search.embedders.speech_synthesis import speak
from archive_search.errors import ArchiveSearchError, IndexMismatchError

PIECE_GAP_S = 0.12
"""Seconds of pause between synthesized pieces of a sentence."""

SENTENCE_GAP_S = 0.5
"""Seconds of pause between sentences."""


@dataclass(frozen=True)
class Spoken:
    """A keyword spoken in an episode, with its exact [start, end) seconds."""

    words: str
    start: float
    end: float


def build_episode(sentences: Sequence[Sequence[str]], voice: str = "en-us", speed: int = 165) -> tuple[np.ndarray, list[Spoken]]:
    """Speak sentences made of pieces; a piece in brackets, "[telescope]", is a keyword whose time is kept.

    Returns 16 kHz samples and the keywords' exact times.
    """
    parts: list[np.ndarray] = [np.zeros(int(0.3 * SAMPLE_RATE), np.float32)]
    position = 0.3
    spoken = []
    for sentence in sentences:
        for piece in sentence:
            keyword = piece.startswith("[") and piece.endswith("]")
            text = piece.strip("[]")
            samples = speak(text, voice, speed)
            if keyword:
                spoken.append(Spoken(text, position, position + len(samples) / SAMPLE_RATE))
            gap = np.zeros(int(PIECE_GAP_S * SAMPLE_RATE), np.float32)
            parts += [samples, gap]
            position += (len(samples) + len(gap)) / SAMPLE_RATE
        parts.append(np.zeros(int(SENTENCE_GAP_S * SAMPLE_RATE), np.float32))
        position += SENTENCE_GAP_S
    return np.concatenate(parts), spoken


EPISODES: list[tuple[str, int, list[list[str]]]] = [
    ("en-us", 160, [
        ["welcome back to the show, tonight we look through a", "[telescope]", "at the night sky"],
        ["our guest built an", "[observatory]", "on a hill behind her farm"],
        ["she says the", "[harvest moon]", "is the best time to start"],
    ]),
    ("en-gb", 150, [
        ["this week we travelled to iceland to see a", "[volcano]", "up close"],
        ["the guides told us about the", "[glacier]", "that covers the valley"],
        ["we ended the trip with a", "[telescope]", "and a flask of tea"],
    ]),
    ("en-us+f3", 170, [
        ["today on the podcast, the city", "[orchestra]", "plays a new piece"],
        ["the conductor grew up near a", "[volcano]", "in southern italy"],
        ["the concert ends before the", "[harvest moon]", "rises"],
    ]),
    ("en-gb-scotland", 155, [
        ["in this episode we talk about", "[bicycles]", "and winter roads"],
        ["a listener wrote in about her", "[lighthouse]", "on the coast"],
        ["and we finish with a story about an", "[orchestra]", "on a ship"],
    ]),
]  # fmt: skip
"""(voice, words per minute, sentences): the demo archive. Keywords are in brackets."""


def build_demo_archive(folder: str | Path) -> dict[str, list[Spoken]]:
    """Write the demo episodes as FLAC files under `folder/audio`; returns path -> keyword times."""
    audio = Path(folder) / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    truth = {}
    for number, (voice, speed, sentences) in enumerate(EPISODES, 1):
        samples, spoken = build_episode(sentences, voice, speed)
        path = audio / f"episode-{number:02d}.flac"
        sf.write(str(path), samples, SAMPLE_RATE)
        truth[str(path.resolve())] = spoken
    return truth


MATCH_TOLERANCE_S = 0.5
"""A hit is right when its midpoint lies within this of a true occurrence's (NIST STD, as archive-eval)."""


def hit_matches(hit, truth: dict[str, list[Spoken]], words: str) -> bool:
    """Whether `hit` lies at a place where `words` is spoken, by the NIST STD midpoint rule."""
    middle = (hit.start + hit.end) / 2
    return any(
        hit.file == path and abs(middle - (s.start + s.end) / 2) <= MATCH_TOLERANCE_S
        for path, said in truth.items()
        for s in said
        if s.words == words
    )


def index_demo(out: Path, models=None):
    """Index the demo audio under `out` into `out/index` -> (Archive, IndexReport).

    The demo owns that index: one built by an earlier model (after an upgrade) is rebuilt
    rather than refused, as a user's own index would be."""
    from archive_search import Archive

    index = out / "index"
    try:
        archive = Archive.open(index, models=models)
        return archive, archive.add([out / "audio"])
    except IndexMismatchError:
        shutil.rmtree(index)
        archive = Archive.open(index, models=models)
        return archive, archive.add([out / "audio"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-archive", help="folder for the demo audio and index (default: ./demo-archive)")
    args = parser.parse_args(argv)
    from archive_search.cli.search import format_table

    out = Path(args.out).resolve()
    try:
        started = time.monotonic()
        truth = build_demo_archive(out)
        total = sum(sf.info(p).duration for p in truth)
        print(f"demo: wrote {len(truth)} episodes ({total:.0f} s of speech) to {out / 'audio'} in {time.monotonic() - started:.1f} s")
        archive, report = index_demo(out)
        print(
            f"demo: indexed {len(report.added) + len(report.updated)} files ({report.unchanged} unchanged), "
            f"{report.windows_added} windows, {report.speed:.0f}x real time, into {out / 'index'}"
        )
        for query in ("telescope", "harvest moon", "orchestra"):
            hits = archive.search(query, top=3)
            status = "found" if hits and hit_matches(hits[0], truth, query) else "NOT first"
            print(f"\narchive-search {query!r}  (the right place ranks first: {status})")
            print(format_table(hits) if hits else "no hits")
        clip_path = out / "query-volcano.wav"
        sf.write(str(clip_path), speak("volcano", "en-us+m3", 150), SAMPLE_RATE)
        hits = archive.search_audio(clip_path, top=3)
        status = "found" if hits and hit_matches(hits[0], truth, "volcano") else "NOT first"
        print(f"\narchive-search --audio {clip_path.name}  (another voice saying 'volcano'; right place first: {status})")
        print(format_table(hits) if hits else "no hits")
    except ArchiveSearchError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
