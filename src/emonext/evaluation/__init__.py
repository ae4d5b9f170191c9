"""Metrics, reports and model comparisons."""
