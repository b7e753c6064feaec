"""Adaptive batching of concurrent requests (batcher.py) over pure merge/split functions (merge.py)."""
