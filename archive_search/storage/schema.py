"""The catalogue of an index (SQLAlchemy 2.0, SQLite or PostgreSQL): files, windows,
transcripts, and key/value meta.

Paths are stored as the file system's own bytes (`os.fsencode`; BLOB / bytea), so names that
are not UTF-8 round-trip exactly. Window ids are the FAISS vector ids and are never reused, so
a stale vector can never be mistaken for a newer window: SQLite's AUTOINCREMENT remembers the
highest id ever given, PostgreSQL's sequence never goes back. These classes describe the
current schema; `storage/migrations` creates and upgrades it, on both databases.
"""

from __future__ import annotations

import json

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BigId = BigInteger().with_variant(Integer, "sqlite")
"""64-bit ids and byte sizes: BIGINT on PostgreSQL (INTEGER is 32-bit there: a 10,000-hour
archive's window ids and a 3 GB WAV's size overflow it); SQLite's INTEGER is already 64-bit,
and only `INTEGER PRIMARY KEY` may be AUTOINCREMENT."""


class Base(DeclarativeBase):
    pass


class FileRow(Base):
    """One indexed audio file. `n_windows` is 0 for files that were silent or too short."""

    __tablename__ = "files"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    path: Mapped[bytes] = mapped_column(LargeBinary, unique=True, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigId, nullable=False)
    mtime: Mapped[float] = mapped_column(Float, nullable=False)
    duration: Mapped[float] = mapped_column(Float, nullable=False)
    sample_rate: Mapped[int] = mapped_column(Integer, nullable=False)
    n_windows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    indexed_at: Mapped[float] = mapped_column(Float, nullable=False)


class WindowRow(Base):
    """One embedded window: [start, end) seconds of a file at one of the window scales."""

    __tablename__ = "windows"
    __table_args__ = (Index("ix_windows_file", "file_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(BigId, ForeignKey("files.id", ondelete="CASCADE"), nullable=False)
    start: Mapped[float] = mapped_column(Float, nullable=False)
    end: Mapped[float] = mapped_column(Float, nullable=False)
    scale: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    """Index into the index's `window_scales_s` meta value (the `end - start` before tail clipping)."""


class TranscriptRow(Base):
    """A file's transcript: present once the file was transcribed (with zero words when it holds
    no speech). An index made without transcripts gains them when `archive-index` runs again."""

    __tablename__ = "transcripts"

    file_id: Mapped[int] = mapped_column(BigId, ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    n_words: Mapped[int] = mapped_column(Integer, nullable=False)
    transcribed_at: Mapped[float] = mapped_column(Float, nullable=False)


class WordRow(Base):
    """One transcript word: normalised token, [start, end) seconds, the transcriber's
    probability, and its G2P phonemes (space-separated stress-free ARPAbet)."""

    __tablename__ = "words"
    __table_args__ = (Index("ix_words_file", "file_id"), Index("ix_words_token", "token"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(BigId, ForeignKey("files.id", ondelete="CASCADE"), nullable=False)
    start: Mapped[float] = mapped_column(Float, nullable=False)
    end: Mapped[float] = mapped_column(Float, nullable=False)
    token: Mapped[str] = mapped_column(Text, nullable=False)
    probability: Mapped[float] = mapped_column(Float, nullable=False)
    phonemes: Mapped[str] = mapped_column(Text, nullable=False)


class MetaRow(Base):
    """Key/value settings of the index, values JSON-encoded."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)

    @property
    def decoded(self):
        return json.loads(self.value)
