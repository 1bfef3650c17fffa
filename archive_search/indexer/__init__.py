"""Walking folders, change detection, windowing, and batching audio through the encoder into storage."""

from archive_search.indexer.core import FileIssue, Indexer, IndexProgress, IndexReport, index_settings
from archive_search.indexer.windows import StreamWindower, window_spans

__all__ = ["FileIssue", "IndexProgress", "IndexReport", "Indexer", "StreamWindower", "index_settings", "window_spans"]
