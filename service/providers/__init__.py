"""Who writes the report: the vendor-free provider interface, Anthropic's Claude, and the offline writer."""
