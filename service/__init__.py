"""Report service: slow LLM report generation taken off the HTTP request path."""
