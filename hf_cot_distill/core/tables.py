"""Markdown tables: the one writer and the one parser of every report, summary and card table.

Cells are text: ``|`` inside a cell is escaped as ``\\|`` (it would end the cell) and a line
break becomes a space (it would end the row); :func:`parse_markdown_table` undoes the escape, so
a table written here reads back cell for cell (line breaks excepted: they stay spaces).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# The line under the header: ``|---|:--|--:|`` (outer pipes optional, colons for alignment).
_DELIMITER_ROW = re.compile(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*")


def escape_cell(value: Any) -> str:
    """``value`` as the text of one cell: ``|`` escaped, line breaks as spaces."""
    return _LINE_BREAK.sub(" ", str(value)).replace("|", "\\|")


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
    if not head:
        raise ValueError("markdown_table: a table needs at least one header cell.")
    fmt = escape_cell if escape else str
    lines = ["| " + " | ".join(fmt(h) for h in head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows):
        if len(row) != len(head):
            raise ValueError(
                f"markdown_table: row {i} has {len(row)} cells for {len(head)} headers: {list(row)!r}."
            )
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def _is_row(line: str) -> bool:
    return line.lstrip().startswith("|")


def _split_row(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip().replace("\\|", "|") for c in _UNESCAPED_PIPE.split(inner)]


def parse_markdown_table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows (header -> cell text) of the first table in ``text`` whose first header cell is
    ``first_header``; ``ValueError`` if there is none, or if one of its rows does not have one
    cell per header (an unescaped ``|`` in a cell)."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if not _is_row(line) or not _DELIMITER_ROW.fullmatch(lines[i + 1]):
            continue
        head = _split_row(line)
        if head[0] != first_header:
            continue
        rows = []
        for n, row in enumerate(lines[i + 2 :], start=i + 3):
            if not _is_row(row):
                break
            cells = _split_row(row)
            if len(cells) != len(head):
                raise ValueError(
                    f"markdown table {first_header!r}, line {n}: {len(cells)} cells for {len(head)} "
                    f"headers: {row!r}."
                )
            rows.append(dict(zip(head, cells)))
        return rows
    raise ValueError(f"no markdown table with first header {first_header!r}.")
