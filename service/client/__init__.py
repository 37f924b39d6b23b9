"""Talking to the API from outside: the Server-Sent Events reader and the submit command line."""
