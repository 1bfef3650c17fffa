"""archive-search: find every place a word or phrase is spoken in an audio archive."""

__version__ = "0.1.0"

__all__ = ["Archive", "Hit", "__version__"]


def __getattr__(name: str):
    # Lazy, so importing a light submodule (phonemes, errors) does not load FAISS and SQLAlchemy.
    if name == "Archive":
        from archive_search.api import Archive

        return Archive
    if name == "Hit":
        from archive_search.search.engine import Hit

        return Hit
    raise AttributeError(f"module 'archive_search' has no attribute {name!r}")
