"""Markdown tables: the one writer and the one parser of every report, summary and card table.

Cells are text: ``|`` inside a cell is escaped as ``\\|`` (it would end the cell) and a newline
becomes a space (it would end the row); :func:`parse_markdown_table` undoes the escape, so a
table written here reads back cell for cell.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def escape_cell(value: Any) -> str:
    """``value`` as the text of one cell: ``|`` escaped, newlines as spaces."""
    return str(value).replace("\r\n", " ").replace("\n", " ").replace("|", "\\|")


def code_cell(value: Any) -> str:
    """A cell holding ``value`` as inline code, fenced with one backtick more than the longest
    backtick run inside it (a value with a backtick would otherwise end the span)."""
    text = escape_cell(value)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence, pad = "`" * (longest + 1), " " if longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_table(head: Sequence[Any], rows: Sequence[Sequence[Any]], *, escape: bool = True) -> str:
    """A markdown table with header ``head`` and one line per row, ending with a newline.

    Every row must have ``len(head)`` cells (a short row would shift its cells under the wrong
    header). ``escape=False`` takes cells already escaped (e.g. from :func:`code_cell`).
    """
    fmt = escape_cell if escape else str
    lines = ["| " + " | ".join(fmt(h) for h in head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows):
        if len(row) != len(head):
            raise ValueError(
                f"markdown_table: row {i} has {len(row)} cells for {len(head)} headers: {list(row)!r}."
            )
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def _split_row(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip().replace("\\|", "|") for c in _UNESCAPED_PIPE.split(inner)]


def parse_markdown_table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows (header -> cell text) of the first table in ``text`` whose first header cell is
    ``first_header``; ``ValueError`` if there is none."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("|"):
            continue
        head = _split_row(line)
        if head[0] != first_header:
            continue
        rows = []
        for row in lines[i + 2 :]:
            if not row.lstrip().startswith("|"):
                break
            rows.append(dict(zip(head, _split_row(row))))
        return rows
    raise ValueError(f"no markdown table with first header {first_header!r}.")
