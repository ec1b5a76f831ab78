"""Benchmarks of Minqing: ``python -m bench`` (``make bench``); see ``bench/README.md``."""
