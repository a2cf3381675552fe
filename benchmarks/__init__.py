"""Benchmarks for meshplan: a seeded synthetic workload generator and a runner.

``python -m benchmarks`` renders the sizes S, M and L, each in a fresh subprocess, and writes
``benchmarks/RESULTS.md``; ``python -m benchmarks --help`` lists the other commands
(``generate``, ``run-one``, ``profile``). See ``benchmarks/README.md``.
"""
