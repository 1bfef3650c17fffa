"""Every store test runs on both catalogues: the folder's own SQLite file and a real PostgreSQL
server (tests/pg_server.py). `pytest -k postgres` selects the PostgreSQL runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from archive_search.storage.store import IndexSettings, Store
from tests.pg_server import postgres_server, postgres_url  # noqa: F401  (fixtures)

SETTINGS = IndexSettings("model-a", 8, (0.5, 1.0), 1 / 3)


@dataclass(frozen=True)
class Backend:
    """An index folder and its catalogue: `db` is None for the folder's own index.sqlite."""

    name: str
    folder: Path
    db: str | None

    @property
    def url(self) -> str:
        return self.db or f"sqlite:///{self.folder / 'index.sqlite'}"

    def writer(self, settings: IndexSettings = SETTINGS) -> Store:
        return Store.open_for_writing(self.folder, settings, db=self.db)

    def reader(self) -> Store:
        """Opened without the URL: the folder knows its catalogue."""
        return Store.open(self.folder)

    def sql(self, statement: str, **params) -> list:
        """Run SQL on the catalogue behind the store's back (as a lost row or an old writer would)."""
        engine = create_engine(self.url)
        try:
            with engine.begin() as connection:
                result = connection.execute(text(statement), params)
                return result.all() if result.returns_rows else []
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Backend:
    db = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return Backend(request.param, tmp_path / "index", db)


@pytest.fixture
def backend_postgres(tmp_path, postgres_url) -> tuple[Path, str]:
    """(index folder, URL of an empty PostgreSQL database) for the PostgreSQL-only tests."""
    return tmp_path / "index", postgres_url
