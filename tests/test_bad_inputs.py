"""The bad-input corpus (tests/bad_inputs.yaml, issue #16): every entry through the CLI gives exit
code 2, exactly one `error:` line on stderr naming the problem, no traceback, and writes nothing."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from hf_cot_distill.cli import main

ROOT = Path(__file__).resolve().parents[1]
CORPUS = yaml.safe_load((Path(__file__).parent / "bad_inputs.yaml").read_text())


def corpus_argv(entry: dict[str, str], places: dict[str, Path]) -> list[str]:
    """The entry's command line with its placeholders filled in."""
    return [part.format(**{k: str(v) for k, v in places.items()}) for part in shlex.split(entry["argv"])]


def make_places(root: Path) -> dict[str, Path]:
    """The inputs the corpus names: a tiny saved model with its tokenizer, a messages dataset, a
    user's file, the tiny KD recipe and a generator YAML; ``tmp`` is left empty."""
    from tests.test_train_cli import _messages_dataset, _tiny_pair
    from tests.tiny_tokenizer import tiny_qwen2_tokenizer

    inputs = root / "inputs"
    inputs.mkdir()
    models = _tiny_pair(inputs, tiny_qwen2_tokenizer())
    notes = inputs / "notes.json"
    notes.write_text('{"mine": true}')
    (root / "tmp").mkdir()
    return {
        "tmp": root / "tmp",
        "model": models["student"],
        "data": _messages_dataset(inputs),
        "notes": notes,
        "kd": ROOT / "recipes/tiny/kd_messages.yaml",
        "gen": ROOT / "recipes/generators/cot_icl_lab_tiny.yaml",
    }


def snapshot(folder: Path) -> dict[str, Any]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns if p.is_file() else None for p in folder.rglob("*")
    }


def test_the_corpus_is_well_formed():
    assert len(CORPUS) >= 40
    assert all(set(entry) == {"argv", "says"} for entry in CORPUS)
    commands = {shlex.split(entry["argv"])[0] for entry in CORPUS}
    assert commands >= {"generate", "train", "eval", "compress", "cache-teacher", "sweep", "push", "recipes",
                        "convert-gguf", "demo", "card", "reproduce"}  # fmt: skip


def test_every_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    places = make_places(tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    capsys.readouterr()
    before = snapshot(tmp_path)
    failures = []
    for entry in CORPUS:
        argv = corpus_argv(entry, places)
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse's usage errors
            code = stop.code
        out = capsys.readouterr()
        lines = out.err.strip().splitlines()
        problems = []
        if code != 2:
            problems.append(f"exit {code}")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"{len(lines)} stderr lines")
        if "Traceback" in out.err + out.out:
            problems.append("traceback")
        if entry["says"] not in out.err:
            problems.append(f"does not say {entry['says']!r}")
        if snapshot(tmp_path) != before:
            problems.append("wrote files")
            before = snapshot(tmp_path)
        if problems:
            failures.append(f"{entry['argv']}: {', '.join(problems)}\n    stderr: {out.err.strip()[:400]}")
    assert not failures, f"{len(failures)} of {len(CORPUS)} bad inputs:\n" + "\n".join(failures)


@pytest.mark.parametrize("entry", CORPUS[:1])
def test_corpus_argv_fills_placeholders(entry, tmp_path):
    assert "{" not in " ".join(corpus_argv(entry, {"tmp": tmp_path}))
