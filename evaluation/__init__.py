"""Evaluation stage: metrics of an exported model on a split, and the HTML report."""
