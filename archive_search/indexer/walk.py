"""Finding audio files under folders, and telling whether they changed since indexing."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from archive_search.audio import AUDIO_EXTENSIONS

HASH_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class Candidate:
    """An audio file found on disk (absolute path) with its size and mtime."""

    path: str
    size: int
    mtime: float


@dataclass(frozen=True)
class WalkProblem:
    """A path that could not be walked (unreadable folder, dangling link)."""

    path: str
    reason: str


def is_audio_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def walk_audio(roots: Iterable[str | Path], problems: list[WalkProblem] | None = None) -> Iterator[Candidate]:
    """Audio files under `roots` (files given directly are taken whatever their extension).

    Follows symlinks but visits each real folder once, so symlink loops end. Paths are
    absolute but not resolved, as the user sees them. Yields in sorted order per folder.
    """
    problems = problems if problems is not None else []
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for root in roots:
        root = os.path.abspath(os.fspath(root))
        if os.path.isfile(root):
            candidate = _candidate(root, problems)
            if candidate and candidate.path not in seen_files:
                seen_files.add(candidate.path)
                yield candidate
            continue
        if not os.path.isdir(root):
            problems.append(WalkProblem(root, "does not exist"))
            continue
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                info = os.stat(folder)
            except OSError as exc:
                problems.append(WalkProblem(folder, f"cannot be read: {exc.strerror}"))
                continue
            if (info.st_dev, info.st_ino) in seen_dirs:
                continue  # a symlink loop or a second link to a folder already walked
            seen_dirs.add((info.st_dev, info.st_ino))
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:
                problems.append(WalkProblem(folder, f"cannot be read: {exc.strerror}"))
                continue
            subfolders = []
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=True)
                except OSError:
                    is_dir = False
                if is_dir:
                    subfolders.append(entry.path)
                elif is_audio_name(entry.name):
                    candidate = _candidate(entry.path, problems)
                    if candidate and candidate.path not in seen_files:
                        seen_files.add(candidate.path)
                        yield candidate
            stack.extend(reversed(subfolders))


def _candidate(path: str, problems: list[WalkProblem]) -> Candidate | None:
    try:
        info = os.stat(path)
    except OSError as exc:
        problems.append(WalkProblem(path, f"cannot be read: {exc.strerror}"))
        return None
    return Candidate(path, int(info.st_size), float(info.st_mtime))


def content_hash(path: str | Path) -> str:
    """BLAKE2b (128-bit) of the file's bytes, read in blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
