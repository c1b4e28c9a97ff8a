"""Benchmarks for Alliance Check, run by `make bench` (`python -m bench`).

Every figure is printed next to a baseline measured on the same server in the same run, so
the ratios mean something on any machine. Nothing here asserts speed; see docs/benchmarks.md.
"""
