"""Everything the service keeps in Redis: API keys, job records, events, usage, the queue."""
