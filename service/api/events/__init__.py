"""Live progress over Server-Sent Events: the endpoint, the per-process fan-out and the wire format."""
