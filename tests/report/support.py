"""What the PDF tests share: a report using every block, a document around it, text and fonts read back."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from pypdf import PdfReader

from service.report.document import ReportDocument

REPORT = """# Quarterly review

An opening paragraph about **revenue** and *margins*, with `code` in it.

## Highlights

- First bullet point
- Second bullet point
  - A nested bullet

1. Numbered one
2. Numbered two

```
SELECT region, sum(revenue) FROM sales GROUP BY region;
```

| Region | Revenue |
|--------|--------:|
| EMEA   | 1,200   |

Closing paragraph.
"""


def document(markdown: str = REPORT, *, offline: bool = False, title: str = "Sales review") -> ReportDocument:
    return ReportDocument(
        title=title,
        created_at=datetime(2025, 3, 4, 5, 6, tzinfo=UTC),
        model="offline" if offline else "claude-opus-4-7",
        markdown=markdown,
        source="sales.csv (12.3 kB)",
        offline=offline,
    )


def page_texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def fonts_of(pdf: bytes) -> set[str]:
    fonts = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        resources: Any = page["/Resources"]
        for font in resources["/Font"].values():
            fonts.add(str(font.get_object()["/BaseFont"]))
    return fonts
