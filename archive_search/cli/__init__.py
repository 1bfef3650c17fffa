"""Thin click commands over the library: archive-index, archive-search, archive-data, archive-train, archive-eval."""
