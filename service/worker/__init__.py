"""The worker process: arq's options and hooks, the poll loop, draining, and the report pipeline."""
