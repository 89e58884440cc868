"""Shared core of doctags: config, text cleaning, record schema, labels, metrics."""
