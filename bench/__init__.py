"""Benchmarks (not tests): ``python -m bench [NAME ...]`` rewrites docs/benchmarks.md.

Each benchmark module has ``TITLE`` and ``run() -> str`` (a markdown section). Sections of
benchmarks that were not run this time are kept from the existing file.
"""
