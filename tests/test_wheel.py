"""The wheel is the package: recipes, generator YAMLs and card templates ship inside it.

Builds the wheel, installs it (no dependencies: they are reused from the test environment) into a
fresh venv, and runs the commands a user runs first from a temporary folder outside the
repository, so nothing can be read from the checkout by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from hf_cot_distill.core.resources import RECIPES_DIR, list_recipes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the built wheel, the ``hf-cot-distill`` script of a fresh venv with only that wheel)."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    # --no-build-isolation: setuptools of this environment (no download); the build is out of tree.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        cwd=base,
    )
    (wheel,) = dist.glob("hf_cot_distill-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Reuse the installed dependencies: a plain path line adds this environment's site-packages
    # after the venv's own (its .pth files, e.g. the editable install of the checkout, are not run).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
    )
    return wheel, venv / "bin" / "hf-cot-distill"


def test_every_recipe_is_in_the_wheel(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {p.relative_to(ROOT).as_posix() for p in RECIPES_DIR.rglob("*") if p.is_file()}
    packaged = {"hf_cot_distill/" + p.removeprefix("hf_cot_distill/") for p in packaged}
    assert packaged and packaged <= names
    assert {
        "hf_cot_distill/hub/templates/model_card.md.j2",
        "hf_cot_distill/hub/templates/dataset_card.md.j2",
    } <= names


def _run(script: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_installed_wheel_runs_outside_the_repository(installed, tmp_path):
    _, script = installed
    where = _run(
        script.parent / "python", tmp_path, "-c", "import hf_cot_distill; print(hf_cot_distill.__file__)"
    )
    assert where.returncode == 0 and ROOT not in Path(where.stdout.strip()).parents, (
        where.stdout + where.stderr
    )

    listed = _run(script, tmp_path, "recipes", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == list_recipes()
    assert "distill/qwen2.5-7b_to_0.5b_cot_only_lsp0.5" in listed.stdout.split()

    shown = _run(script, tmp_path, "recipes", "show", "tiny/kd_messages")
    assert shown.returncode == 0 and shown.stdout == (RECIPES_DIR / "tiny" / "kd_messages.yaml").read_text()
    copied = _run(script, tmp_path, "recipes", "copy", "tiny/kd_messages", str(tmp_path))
    assert copied.returncode == 0 and (tmp_path / "kd_messages.yaml").is_file()
    again = _run(script, tmp_path, "recipes", "copy", "tiny/kd_messages", str(tmp_path))
    assert again.returncode == 2 and "exists" in again.stderr  # never replaces a file

    gen = _run(
        script, tmp_path, "generate", "--config", "cot_icl_lab_cot", "--out", "X", "--num-tasks", "100"
    )
    assert gen.returncode == 0, gen.stderr
    assert len(list((tmp_path / "X" / "cot_icl_lab_cot").glob("train-*.parquet"))) == 1

    demo = _run(script, tmp_path, "demo", "--small", "--out", "demo")
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-4000:]
    assert (tmp_path / "demo" / "REPORT.md").is_file()
    assert (tmp_path / "demo" / "student_cot_lsp0.5" / "README.md").is_file()
