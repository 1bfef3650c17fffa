"""Walking folders, change detection, windowing, and batching audio through the encoder into storage."""
