"""Tables of benchmark figures, as aligned text or as markdown.

Scenario: every benchmark of `make bench` prints its figures on the terminal and writes them
into benchmarks/RESULTS.md; both should read as tables, with the same helpers.
Solution: plain_table and markdown_table lay out rows; a Section is one benchmark's titled
table with its notes (what each column means, the ratios), rendered either way.
How to run: used by benchmarks/report.py, benchmarks/breaker.py and benchmarks/queue_throughput.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def plain_table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Columns aligned; the first `left` ones to the left, the figures to the right."""
    widths = [max(len(c) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])


@dataclass
class Section:
    """One benchmark's figures: a title, what it did, a table, and notes under it."""

    title: str
    about: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self, markdown: bool) -> str:
        if markdown:
            table = markdown_table(self.headers, self.rows)
            notes = [f"- {note}" for note in self.notes]
            return "\n".join([f"## {self.title}", "", self.about, "", table, "", *notes, ""])
        table = plain_table(self.headers, self.rows)
        return "\n".join([self.title, "", self.about, "", table, *(f"  {n}" for n in self.notes)])
