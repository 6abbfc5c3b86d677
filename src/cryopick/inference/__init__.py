"""Tomogram -> picks: runtime, preprocessing, sliding window, peaks, the pipeline."""
