"""A job's input: URL checks, the SSRF guard, fetching over HTTP, uploads, and decoding to text."""
