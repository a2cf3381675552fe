"""Tests of the benchmark package (benchmarks/ at the repository root)."""
