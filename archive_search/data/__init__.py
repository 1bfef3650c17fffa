"""Synthetic TTS corpora with exact word and phone times, augmentation, and real-corpus loaders."""
