"""core/tables: the one markdown table writer and parser (reports, sweep summaries, cards)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_cot_distill.core.tables import code_cell, escape_cell, markdown_table, parse_markdown_table
from hf_cot_distill.experiments.reproduce_report import parse_ci

ROOT = Path(__file__).resolve().parents[1]


def test_writer_format_is_exact():
    assert markdown_table(["a", "b"], [[1, 2.5], ["x", ""]]) == (
        "| a | b |\n|---|---|\n| 1 | 2.5 |\n| x |  |\n"
    )
    assert markdown_table(["only"], []) == "| only |\n|---|\n"


def test_round_trip_with_pipes_backticks_and_newlines():
    head = ["name|pipe", "code `x`", "plain"]
    rows = [
        ["a|b", "use `{{ x }}`", "1"],
        ["|lead", "``double``", "trail|"],
        ["back\\slash", "`", "multi\nline\r\nand\rcr"],
        ["", "x\\|y", "a || b"],
    ]
    text = markdown_table(head, rows)
    assert len(text.splitlines()) == 2 + len(rows)  # line breaks do not end a row
    parsed = parse_markdown_table("intro\n\n" + text + "\nafter\n", "name|pipe")
    assert [list(r) for r in parsed] == [head] * len(rows)
    expect = [[cell.replace("\r\n", " ").replace("\r", " ").replace("\n", " ") for cell in r] for r in rows]
    assert [list(r.values()) for r in parsed] == expect


def test_escape_cell_and_code_cell():
    assert escape_cell("a|b\nc") == "a\\|b c"
    assert escape_cell(3) == "3"
    assert code_cell("plain") == "`plain`"
    assert code_cell("use `x`") == "`` use `x` ``"
    assert code_cell("lead``span") == "``` lead``span ```"
    assert code_cell("a|b") == "`a\\|b`"
    # pre-escaped cells (escape=False) read back to the code span's text, pipes unescaped
    text = markdown_table([code_cell("k|ey")], [[code_cell("v|al")]], escape=False)
    assert text == "| `k\\|ey` |\n|---|\n| `v\\|al` |\n"
    assert parse_markdown_table(text, "`k|ey`") == [{"`k|ey`": "`v|al`"}]


def test_row_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="row 1 has 1 cells for 2 headers"):
        markdown_table(["a", "b"], [["1", "2"], ["3"]])
    with pytest.raises(ValueError, match="row 0 has 3 cells for 2 headers"):
        markdown_table(["a", "b"], [["1", "2", "3"]])
    with pytest.raises(ValueError, match="at least one header"):
        markdown_table([], [])
    # a hand-written row with an unescaped pipe does not read back shifted
    broken = "| a | b |\n|---|---|\n| 1 | 2 |\n| 1 | 2 | 3 |\n"
    with pytest.raises(ValueError, match=r"'a', line 4: 3 cells for 2 headers"):
        parse_markdown_table(broken, "a")


def test_parse_finds_the_table_by_its_first_header():
    text = (
        "# Report\n\n"
        + markdown_table(["metric", "value"], [["acc", "0.5"]])
        + "\nsome text | with a pipe\n\n"
        + "| step | loss |\n"  # a header-like line without a delimiter row is not a table
        + "not a table\n\n"
        + markdown_table(["step", "loss"], [[1, "2.0"], [2, "1.5"]])
        + "\n"
        + markdown_table(["step", "other"], [[9, "x"]])
    )
    assert parse_markdown_table(text, "metric") == [{"metric": "acc", "value": "0.5"}]
    assert parse_markdown_table(text, "step") == [{"step": "1", "loss": "2.0"}, {"step": "2", "loss": "1.5"}]
    # the table ends at the first line that is not a row
    assert parse_markdown_table(markdown_table(["a"], [[1]]) + "text\n| 2 |\n", "a") == [{"a": "1"}]
    # alignment colons in the delimiter row
    assert parse_markdown_table("| a | b |\n|:--|--:|\n| 1 | 2 |\n", "a") == [{"a": "1", "b": "2"}]


@pytest.mark.parametrize("text", ["", "no table here\n", "| a | b |\n|---|---|\n| 1 | 2 |\n"])
def test_no_table_is_a_value_error(text):
    with pytest.raises(ValueError, match="no markdown table with first header 'missing'"):
        parse_markdown_table(text, "missing")


@pytest.mark.parametrize(
    "name, first_header, ci_columns",
    [
        ("R1_cot_icl_lab_cpu.md", "task family", ["answer_accuracy", "chain_accuracy"]),
        ("R2_cot_recipe_cpu.md", "alpha", ["drop 0/8", "drop 8/8"]),
        ("R3-champ_distill_essence_champ_cpu.md", "KD allocation", ["CE answer", "retained (CE answer)"]),
        ("R3_distill_essence_cpu.md", "KD allocation", ["answer_accuracy"]),
    ],
)
def test_recorded_reproduction_reports_read_back(name, first_header, ci_columns):
    """The recorded reports (written by the old per-module writers) parse with this parser."""
    rows = parse_markdown_table((ROOT / "reproductions" / name).read_text(), first_header)
    assert rows
    for row in rows:
        for column in ci_columns:
            parse_ci(row[column])
