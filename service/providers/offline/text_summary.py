"""The offline summary of plain text: size, sentences, the most frequent terms and the opening lines."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from service.providers.offline.common import Section, Summary, fenced, inline, plural, table

TOP_TERMS = 15
EXCERPT_LINES = 8
EXCERPT_CHARS = 160
_TERM = re.compile(r"[^\W\d_]{3,}")  # words of three letters or more, in any alphabet
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_STOP_TEXT = """
    about above after again against all also and any are aren because been before being below between
    both but can cannot could did didn does doesn doing don down during each few for from further had
    has have having her here hers herself him himself his how into isn its itself just let more most
    must not now off once only other ought our ours ourselves out over own same shall she should some
    such than that the their theirs them themselves then there these they this those through too under
    until very was wasn were what when where which while who whom why will with won would you your
    yours yourself yourselves may might one two per via within without upon yet etc
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())  # English words too common to say what a text is about


@dataclass(frozen=True)
class TextStats:
    chars: int
    words: int
    lines: int
    non_empty_lines: int
    sentences: int
    paragraphs: int
    top_terms: list[tuple[str, int]]


def text_stats(text: str) -> TextStats:
    lines = text.splitlines()
    non_empty = sum(1 for line in lines if line.strip())
    words = len(text.split())
    sentences = len(_SENTENCE_END.findall(text)) or (1 if words else 0)
    paragraphs = sum(1 for block in _PARAGRAPH_BREAK.split(text) if block.strip())
    terms = Counter(term for term in _TERM.findall(text.lower()) if term not in STOP_WORDS)
    return TextStats(
        len(text), words, len(lines), non_empty, sentences, paragraphs, terms.most_common(TOP_TERMS)
    )


def summarize_text(text: str) -> Summary:
    stats = text_stats(text)
    summary = Summary("text")
    if not text.strip():
        summary.findings = ["The input is empty: there is nothing to summarise."]
        return summary
    summary.findings = [
        f"{plural(stats.words, 'word')} in {plural(stats.sentences, 'sentence')} over "
        f"{plural(stats.lines, 'line')} ({plural(stats.chars, 'character')}).",
        f"About {plural(round(stats.words / stats.sentences), 'word')} a sentence, "
        f"in {plural(stats.paragraphs, 'paragraph')}.",
    ]
    if stats.top_terms:
        terms = ", ".join(f"{inline(term)} ({count:,})" for term, count in stats.top_terms[:5])
        summary.findings.append(f"Most frequent terms: {terms}.")
    summary.sections = [_size_section(stats), _excerpt_section(text)]
    if stats.top_terms:
        rows = [[inline(term), f"{count:,}"] for term, count in stats.top_terms]
        summary.sections.insert(1, Section("Most frequent terms", table(["Term", "Count"], rows)))
    return summary


def _size_section(stats: TextStats) -> Section:
    headers = ["Characters", "Words", "Lines", "Non-empty lines", "Sentences", "Paragraphs"]
    values = [stats.chars, stats.words, stats.lines, stats.non_empty_lines, stats.sentences, stats.paragraphs]
    return Section("Size", table(headers, [[f"{value:,}" for value in values]]))


def _excerpt_section(text: str) -> Section:
    lines = []
    for line in text.splitlines():
        if line.strip():
            cut = line.rstrip()
            lines.append(cut if len(cut) <= EXCERPT_CHARS else cut[: EXCERPT_CHARS - 1] + "…")
        if len(lines) == EXCERPT_LINES:
            break
    return Section("Opening lines", fenced(lines))
