"""The catalogue (SQLAlchemy: SQLite or PostgreSQL, migrated by Alembic) and the FAISS vector index: add, remove, search, atomic save, checks."""

from archive_search.storage.store import CheckReport, IndexSettings, Store, StoredFile, WindowInfo
from archive_search.storage.vectors import VectorIndex, choose_kind, windows_per_hour

__all__ = ["CheckReport", "IndexSettings", "Store", "StoredFile", "VectorIndex", "WindowInfo", "choose_kind", "windows_per_hour"]
