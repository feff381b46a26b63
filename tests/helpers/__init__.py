"""Builders and oracles shared by several test directories (and by bench/bench_scheduler.py)."""
