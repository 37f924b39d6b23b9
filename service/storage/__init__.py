"""Where PDFs and uploads live: the storage interface, a local directory, S3-compatible object storage."""
