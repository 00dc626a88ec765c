"""Benchmarks: side-by-side runs against the peers a user would otherwise use."""
