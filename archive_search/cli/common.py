"""What the archive-index and archive-search commands share: the index folder, its catalogue database, error handling."""

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


DB_ENV = "ARCHIVE_SEARCH_DB"


def db_option(function):
    return click.option(
        "--db",
        "db",
        metavar="URL",
        envvar=DB_ENV,
        default=None,
        help="The catalogue database (files, windows, transcripts), a SQLAlchemy URL such as "
        "postgresql://user@host/archive, which several search servers can share; the index folder keeps the vectors "
        "and remembers the URL without its password (give that in PGPASSWORD or ~/.pgpass). Default: "
        f"${DB_ENV}, else the database the folder remembers, else index.sqlite in the folder.",
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
