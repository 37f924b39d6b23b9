"""Benchmarks for the report service's CPU-bound steps."""
