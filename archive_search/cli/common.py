"""What the archive-index and archive-search commands share: the index folder, error handling."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from archive_search.errors import ArchiveSearchError, AudioDecodeError

INDEX_ENV = "ARCHIVE_SEARCH_INDEX"

PARTIAL_FAILURE_EXIT = AudioDecodeError.exit_code
"""archive-index exits with this when some files could not be indexed (the rest were)."""


def default_index_dir() -> Path:
    """$ARCHIVE_SEARCH_INDEX, else the per-user data folder (e.g. ~/.local/share/archive-search/index)."""
    configured = os.environ.get(INDEX_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("archive-search")) / "index"


def index_option(function):
    return click.option(
        "--index",
        "index_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Index folder (default: ${INDEX_ENV}, else the per-user data folder).",
    )(function)


def resolve_index(index_dir: Path | None) -> Path:
    return index_dir if index_dir is not None else default_index_dir()


def printable(text: str) -> str:
    """A path or message that any terminal can print (undecodable bytes shown escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def fail(message: str, code: int) -> None:
    click.echo(f"error: {printable(message)}", err=True)
    raise SystemExit(code)


def domain_errors(function):
    """Turn domain errors into one line on stderr and the error's exit code."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ArchiveSearchError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper
