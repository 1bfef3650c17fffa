"""Query normalisation, candidate retrieval, region merging, reranking, thresholds and `Hit`."""

from archive_search.search.engine import Hit, Searcher, retrieval_score
from archive_search.search.regions import Candidate, Region, merge_regions

__all__ = ["Candidate", "Hit", "Region", "Searcher", "merge_regions", "retrieval_score"]
