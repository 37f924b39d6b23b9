"""The report as a document: Markdown parsed into blocks, laid out on pages, painted as a PDF with borb."""
