"""Creating and upgrading an index's catalogue, SQLite or PostgreSQL, through one Alembic path.

Each file in `versions/` is one revision with a `down_revision` naming the one before it; a
change to `schema.py` ships with a new revision file written by hand. Writers upgrade on
open, under the write lock (`upgrade`); readers only check (`readable`) and never write.

Catalogues made before Alembic carry no `alembic_version` table: their layout tells their
revision (`revision`), and `upgrade` stamps it before upgrading, so they open without a rebuild.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

READABLE_FROM = "0002"
"""The oldest revision this code can search without an upgrade (it reads the transcript tables)."""

_LEGACY_FILES = "0001"
"""Files, windows and meta, as made before Alembic and before transcripts."""
_LEGACY_TRANSCRIPTS = "0002"
"""The same plus the transcript tables."""


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _order() -> tuple[str, ...]:
    """Known revisions, oldest first."""
    script = ScriptDirectory(str(Path(__file__).parent))
    return tuple(r.revision for r in reversed(list(script.walk_revisions())))


def revision(connection: Connection) -> str | None:
    """The catalogue's revision; that of its layout for a catalogue made before Alembic; None
    for an empty database."""
    current = MigrationContext.configure(connection).get_current_revision()
    if current is not None:
        return current
    tables = set(inspect(connection).get_table_names())
    if "files" not in tables:
        return None
    return _LEGACY_TRANSCRIPTS if "transcripts" in tables else _LEGACY_FILES


def known(rev: str) -> bool:
    """Whether this code knows `rev` (an unknown one was written by a newer archive-search)."""
    return rev in _order()


def readable(rev: str) -> bool:
    """Whether this code can read a catalogue at `rev` as it is, without an upgrade."""
    return known(rev) and _order().index(rev) >= _order().index(READABLE_FROM)


def upgrade(connection: Connection) -> None:
    """Create the catalogue in an empty database, or bring an older one up to HEAD, inside the
    caller's transaction (PostgreSQL's DDL is transactional: all or nothing)."""
    config = _config(connection)
    if MigrationContext.configure(connection).get_current_revision() is None:
        legacy = revision(connection)
        if legacy is not None:
            command.stamp(config, legacy)
    command.upgrade(config, "head")
