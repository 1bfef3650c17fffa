"""`archive-search serve`: the JSON API and the page that search an archive and play its hits."""

from archive_search.web.app import create_app

__all__ = ["create_app"]
