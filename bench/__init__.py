"""``make bench``: end-to-end pricing throughput and latency of the worker against a bare baseline."""
