"""What the service tells operators: structured logs, fleet metrics, event-loop lag and model prices."""
