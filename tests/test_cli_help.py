"""`--help` of every command imports no torch/transformers, and the stored field listings of the
recipe commands are the live HfArgumentParser rendering (so they can never go stale)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_cot_distill import _help_pages, cli

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python -c 'from hf_cot_distill.cli import write_help_pages; write_help_pages()'"


def _commands() -> list[str]:
    return sorted(cli.build_parser()._subparsers._group_actions[0].choices)


def _environment_drift() -> str | None:
    """The stored pages were rendered under another transformers / Python than this one (a newer
    release installed since): they are not used, --help renders once and caches (tested below)."""
    stored, here = _help_pages.FINGERPRINT, cli.help_fingerprint()
    drift = [f"{k} {stored[k]} -> {here[k]}" for k in ("python", "transformers") if stored[k] != here[k]]
    return ", ".join(drift) or None


@pytest.mark.parametrize("page", sorted(set(cli.HELP_PAGE.values())))
def test_stored_help_pages_equal_the_live_rendering(page):
    if _environment_drift():
        pytest.skip(f"stored pages are for another environment ({_environment_drift()}); fix: {REGENERATE}")
    assert _help_pages.PAGES[page] == cli.render_fields_help(page), f"stale help page; fix: {REGENERATE}"


def test_stored_help_pages_fingerprint_is_current():
    """Our config sources: always (a config edited without regenerating fails here)."""
    stored, here = _help_pages.FINGERPRINT["sources"], cli.help_fingerprint()["sources"]
    assert stored == here, f"stale help pages; fix: {REGENERATE}"


def test_another_environment_renders_once_then_reads_the_help_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    stale = {**_help_pages.FINGERPRINT, "transformers": "0.0.1"}
    monkeypatch.setattr(_help_pages, "FINGERPRINT", stale)
    live = cli.fields_help("train")
    assert "--learning_rate" in live
    cache = cli.help_cache_file(cli.help_fingerprint())
    assert cache.parent == tmp_path / "hf_cot_distill" and json.loads(cache.read_text()) == {"train": live}

    def no_render(page):
        raise AssertionError("rendered again")

    monkeypatch.setattr(cli, "render_fields_help", no_render)
    assert cli.fields_help("train") == live  # from the cache, nothing heavy


def test_help_imports_no_torch(tmp_path):
    """Every command's --help (and the top-level one) in a fresh interpreter: nothing heavy loads."""
    probe = """
import contextlib, io, json, sys
from hf_cot_distill.cli import main
heavy = ("torch", "transformers", "datasets", "deepspeed", "huggingface_hub")
found = {}
for command in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main([*command, "--help"])
        except SystemExit as stop:
            code = stop.code
    found[" ".join(command) or "(top)"] = [code, "usage:" in out.getvalue(), [m for m in heavy if m in sys.modules]]
print(json.dumps(found))
"""
    commands = [[], *[[c] for c in _commands()]]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for _ in range(1 if _environment_drift() is None else 2):  # drift: the first run fills the cache
        done = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(commands)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        )
    found = json.loads(done.stdout)
    assert set(found) >= {"train", "compress", "cache-teacher", "eval", "card", "(top)"}
    for command, (code, usage, heavy) in found.items():
        assert code == 0 and usage, command
        assert heavy == [], f"`{command} --help` imported {heavy}"


def test_recipe_command_help_lists_usage_and_fields(capsys):
    for command in ("train", "compress", "cache-teacher"):
        assert cli.main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: hf-cot-distill {command}"), command
        assert "--verbose" in text and "--learning_rate" in text and "--supervision_preset" in text
    assert "--prune" in (cli.main(["compress", "-h"]), capsys.readouterr().out)[1]


def test_a_stale_page_is_never_printed(monkeypatch):
    """The stored listing is used only while its fingerprint matches; otherwise the live one."""
    monkeypatch.setattr(_help_pages, "PAGES", {"train": "STORED\n", "compress": "STORED\n"})
    assert cli.fields_help("train") == "STORED\n"  # current fingerprint: the stored text
    stale = {**_help_pages.FINGERPRINT, "sources": {"pipelines/recipe.py": "0" * 64}}
    monkeypatch.setattr(_help_pages, "FINGERPRINT", stale)
    live = cli.fields_help("train")
    assert "STORED" not in live and "--learning_rate" in live


def test_write_help_pages_round_trips(tmp_path):
    """The generated module holds exactly the live listings and the fingerprint."""
    path = cli.write_help_pages(tmp_path / "pages.py")
    scope: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), scope)
    assert scope["FINGERPRINT"] == cli.help_fingerprint()
    assert scope["PAGES"] == {p: cli.render_fields_help(p) for p in ("compress", "train")}


def test_verbose_is_a_flag_of_every_command_that_runs_the_library(capsys):
    for command in ("generate", "eval", "sweep", "demo", "reproduce", "convert-gguf"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "--verbose" in capsys.readouterr().out, command
    for command in ("train", "compress", "cache-teacher"):
        cli.main([command, "--help"])
        usage = capsys.readouterr().out.split("\n\n")[0]  # the usage block
        assert "[--verbose]" in usage, command
