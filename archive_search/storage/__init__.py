"""SQLite metadata (SQLAlchemy) and the FAISS vector index: add, remove, search, atomic save, checks."""
