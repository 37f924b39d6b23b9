"""PDF render benchmark: a realistic generated executive report, timed through ``render_pdf``.

Run it with ``.venv/bin/python -m bench.render`` (prints the numbers as JSON).
"""

from __future__ import annotations

import io
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime

from service.report.document import ReportDocument
from service.report.painter import clear_shaping_cache, render_pdf

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English prose with Claude's tokenizer

_VOCABULARY = (
    "revenue margin growth churn pipeline quarter forecast region segment customer retention pricing "
    "inventory supplier logistics cost headcount hiring budget variance target baseline trend cohort "
    "conversion funnel acquisition renewal contract enterprise midmarket partner channel risk exposure "
    "compliance audit roadmap launch adoption usage engagement satisfaction support backlog capacity "
    "utilisation efficiency throughput latency incident outage recovery investment return payback "
    "the a of to and in for with on by from across against while despite because which that"
)
_WORDS = _VOCABULARY.split()
_REGIONS = ("North America", "EMEA", "APAC", "LATAM", "Nordics", "DACH", "Benelux")


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(9, 22))]
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = f"**{rng.choice(_WORDS)}**"
    if rng.random() < 0.2:
        words[rng.randrange(len(words))] = f"{rng.randint(2, 97)}%"
    return " ".join(words).capitalize() + "."


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(3, 6)))


def _bullets(rng: random.Random, numbered: bool) -> str:
    lines = []
    for n in range(1, rng.randint(4, 7)):
        marker = f"{n}." if numbered else "-"
        lead = f"**{rng.choice(_WORDS).capitalize()}:** " if rng.random() < 0.4 else ""
        lines.append(f"{marker} {lead}{_sentence(rng)}")
        if not numbered and rng.random() < 0.25:
            lines.append(f"  - {_sentence(rng)}")
    return "\n".join(lines)


def _table(rng: random.Random) -> str:
    rows = ["| Region | Revenue (k$) | Growth | Churn |", "|---|---:|---:|---:|"]
    for region in rng.sample(_REGIONS, 5):
        rows.append(
            f"| {region} | {rng.randint(800, 9000):,} | {rng.uniform(-5, 25):.1f}% | "
            f"{rng.uniform(1, 9):.1f}% |"
        )
    return "\n".join(rows)


def _section(rng: random.Random, number: int) -> list[str]:
    parts = [f"## {number}. {rng.choice(_WORDS).capitalize()} and {rng.choice(_WORDS)}", _paragraph(rng)]
    parts.append(_bullets(rng, numbered=rng.random() < 0.3))
    if rng.random() < 0.5:
        parts += [f"### {rng.choice(_WORDS).capitalize()} details", _paragraph(rng)]
    return [*parts, _paragraph(rng)]


def sample_report_markdown(tokens: int = 4000, seed: int = 7) -> str:
    """A deterministic executive report of about ``tokens`` tokens: headings, bullets, paragraphs, a table."""
    rng = random.Random(seed)
    target = tokens * CHARS_PER_TOKEN
    parts = ["# Executive report: quarterly performance", "## Summary", _paragraph(rng), _table(rng)]
    number = 1
    while sum(len(p) + 2 for p in parts) < target:
        parts += _section(rng, number)
        number += 1
    text = "\n\n".join(parts)
    return text[:target].rsplit(" ", 1)[0] + "."


# One paragraph per script the PDF must print (the same sentence: "Revenue grew in the third quarter, and
# customer retention improved in every region."), repeated to length by ``mixed_report_markdown``.
# ruff: noqa: RUF001  # letters of other scripts that look Latin are the point of this sample
MIXED_SCRIPTS = {
    "Japanese": "第3四半期の売上は増加し、すべての地域で**顧客維持率**が改善しました。",
    "Chinese": "第三季度收入增长，所有地区的**客户留存率**均有所提高。",
    "Korean": "3분기 매출이 증가했으며 모든 지역에서 **고객 유지율**이 개선되었습니다.",
    "Russian": "Выручка выросла в третьем квартале, и **удержание клиентов** улучшилось во всех регионах.",
    "Greek": "Τα έσοδα αυξήθηκαν το τρίτο τρίμηνο και η **διατήρηση πελατών** βελτιώθηκε σε όλες τις περιοχές.",
    "Arabic": "نمت الإيرادات في الربع الثالث، وتحسن **الاحتفاظ بالعملاء** في كل المناطق.",
    "Hebrew": "ההכנסות גדלו ברבעון השלישי, ו**שימור הלקוחות** השתפר בכל האזורים.",
    "Hindi": "तीसरी तिमाही में राजस्व बढ़ा, और सभी क्षेत्रों में **ग्राहक प्रतिधारण** में सुधार हुआ।",
    "English": "Revenue grew in the third quarter, and **customer retention** improved in every region.",
}


def mixed_report_markdown(tokens: int = 4000) -> str:
    """A report of about ``tokens`` tokens in nine scripts: a section per language, paragraphs and a table."""
    parts, number = ["# 多言語レポート — Многоязычный отчёт — تقرير متعدد اللغات"], 0
    while sum(len(p) + 2 for p in parts) < tokens * 2:  # non-Latin scripts take ~2 characters per token
        language, sentence = list(MIXED_SCRIPTS.items())[number % len(MIXED_SCRIPTS)]
        parts += [f"## {number + 1}. {language}", " ".join([sentence] * 4), f"- {sentence}\n- {sentence}"]
        if number % 9 == 0:
            parts.append("| 地域 | Выручка | الإيرادات |\n|---|---:|---:|\n| 東京 | 1,200 | ٣٤٥ |")
        number += 1
    return "\n\n".join(parts)


def sample_document(tokens: int = 4000, offline: bool = False, mixed: bool = False) -> ReportDocument:
    """A ``ReportDocument`` around ``sample_report_markdown(tokens)`` (or ``mixed_report_markdown``)."""
    return ReportDocument(
        title="Quarterly performance review",
        created_at=datetime(2025, 1, 31, 9, 30, tzinfo=UTC),
        model="offline" if offline else "claude-opus-4-7",
        markdown=mixed_report_markdown(tokens) if mixed else sample_report_markdown(tokens),
        source="sales.csv (12.3 kB)",
        offline=offline,
    )


def _count_pages(pdf: bytes) -> int:
    from pypdf import PdfReader  # a dev dependency: only the benchmark needs it

    return len(PdfReader(io.BytesIO(pdf)).pages)


def measure_render(samples: int = 20, tokens: int = 4000, mixed: bool = False) -> dict[str, float]:
    """Median / p95 / max milliseconds of ``render_pdf`` for a ``tokens``-token report, after warm-up; each
    sample shapes its text afresh (a real report's words are not in the process's shaping cache)."""
    document = sample_document(tokens, mixed=mixed)
    pdf = render_pdf(document)  # warm-up: imports, font tables, caches
    timings = []
    for _ in range(samples):
        clear_shaping_cache()
        start = time.perf_counter()
        render_pdf(document)
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    p95_index = min(len(timings) - 1, round(0.95 * (len(timings) - 1)))
    return {
        "median_ms": round(statistics.median(timings), 1),
        "p95_ms": round(timings[p95_index], 1),
        "max_ms": round(timings[-1], 1),
        "pages": float(_count_pages(pdf)),
        "characters": float(len(document.markdown)),
        "pdf_kb": round(len(pdf) / 1000, 1),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    results = {"latin": measure_render(count), "mixed scripts": measure_render(count, mixed=True)}
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
