"""archive-search: find every place a word or phrase is spoken in an audio archive."""

__version__ = "0.1.0"
