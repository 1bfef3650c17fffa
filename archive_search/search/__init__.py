"""Query normalisation, candidate retrieval, region merging, reranking, thresholds and `Hit`."""
