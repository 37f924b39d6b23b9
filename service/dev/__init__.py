"""Running everything on one machine: `make run` and the embedded redis-server."""
