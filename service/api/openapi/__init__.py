"""The API described as OpenAPI 3.1: the operations table and the document built from it."""
