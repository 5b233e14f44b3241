"""Benchmarks: the paper's experiments and throughput measurements, run against the real services."""
