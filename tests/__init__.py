"""Test suite: real Redis, real SDK against a fake Anthropic server, real subprocesses."""
