"""The layer contract: import-linter's contracts (pyproject.toml) and private names kept private."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_cot_distill"


def _module(path: Path) -> tuple[str, str]:
    """(dotted module name, its package) of a file under ``hf_cot_distill/``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def _imported_from(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_names_used_across_packages() -> list[str]:
    """``from hf_cot_distill.x.y import _name`` in a module outside package ``hf_cot_distill.x``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        _, package = _module(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _imported_from(node, package)
            if not source.startswith("hf_cot_distill"):
                continue
            # the package that owns `source`'s private names: itself if a package, else its parent
            is_package = (PACKAGE.parent / source.replace(".", "/") / "__init__.py").is_file()
            owner = source if is_package else source.rsplit(".", 1)[0]
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and package != owner and not package.startswith(owner + "."):
                    where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                    found.append(f"{where} imports {source}.{alias.name}")
    return found


def test_no_private_name_is_imported_from_another_package():
    assert private_names_used_across_packages() == []


def test_the_checker_sees_a_private_import(tmp_path, monkeypatch):
    fake = tmp_path / "hf_cot_distill"
    (fake / "a").mkdir(parents=True)
    (fake / "b").mkdir()
    (fake / "a" / "m.py").write_text("def _hidden():\n    pass\n")
    (fake / "b" / "n.py").write_text("from hf_cot_distill.a.m import _hidden\n")
    (fake / "a" / "ok.py").write_text("from hf_cot_distill.a.m import _hidden\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert private_names_used_across_packages() == [
        "hf_cot_distill/b/n.py:1 imports hf_cot_distill.a.m._hidden"
    ]


def test_import_linter_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency (pip install -e '.[dev]')"
    done = subprocess.run([lint, "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "3 kept, 0 broken" in done.stdout
