"""B10 reliability figures (issue #16): bad inputs tried through the installed `hf-cot-distill`
command (one fresh process each, the corpus of tests/bad_inputs.yaml), how many give one clear
line (exit 2, one `error:` line, no traceback, nothing written), files of the user's overwritten,
and resume metric mismatches (a run resumed from every checkpoint against the uninterrupted run).

    python benchmarks/b10_reliability.py [--json OUT]

Prints the figures and the entries that fail. Needs the repository checkout (tests/ fixtures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_bad_inputs import CORPUS, corpus_argv, make_places  # noqa: E402

CLI = str(Path(sys.executable).with_name("hf-cot-distill"))
TIMING = {
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "wall_time_s",
    "peak_memory_mb",
}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def run_corpus(root: Path) -> dict:
    places = make_places(root)
    work = root / "cwd"
    work.mkdir()
    inputs = _digest(root)
    users = make_digest_of_user_files(places)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    clear, failing, seconds = 0, [], []
    for entry in CORPUS:
        argv = corpus_argv(entry, places)
        start = time.perf_counter()
        done = subprocess.run([CLI, *argv], capture_output=True, text=True, cwd=work, env=env)
        seconds.append(time.perf_counter() - start)
        lines = done.stderr.strip().splitlines()
        ok = (
            done.returncode == 2
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and "Traceback" not in done.stderr + done.stdout
            and entry["says"] in done.stderr
            and _digest(root) == inputs
        )
        clear += ok
        if not ok:
            failing.append({"argv": entry["argv"], "exit": done.returncode, "stderr": done.stderr[-500:]})
        inputs = _digest(root)  # count each write once
    after = make_digest_of_user_files(places)
    overwritten = sum(1 for name, digest in users.items() if after.get(name) != digest)
    return {
        "bad_inputs": len(CORPUS),
        "one_clear_line": clear,
        "failing": failing,
        "user_files_overwritten": overwritten,
        "seconds_median": sorted(seconds)[len(seconds) // 2],
    }


def make_digest_of_user_files(places: dict[str, Path]) -> dict[str, str]:
    """The user's own inputs the corpus aims writers at: the notes file and the model folder."""
    found = {"notes": hashlib.sha256(places["notes"].read_bytes()).hexdigest()}
    for name, digest in _digest(places["model"]).items():
        found[f"model/{name}"] = digest
    return found


def run_resume(root: Path) -> dict:
    """Uninterrupted 4-step run vs. a copy resumed from each of checkpoints 1-3: metric mismatches."""
    from tests.test_train_cli import _messages_dataset, _tiny_pair
    from tests.tiny_tokenizer import tiny_qwen2_tokenizer

    models = _tiny_pair(root, tiny_qwen2_tokenizer())
    data = _messages_dataset(root)
    argv = [
        "train", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"), "--model_name_or_path", str(models["student"]),
        "--teacher_model_name_or_path", str(models["teacher"]), "--dataset_name", str(data), "--max_steps", "4",
        "--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    full = root / "full"
    subprocess.run([CLI, *argv, "--output_dir", str(full)], check=True, capture_output=True, env=env)

    def metrics(folder: Path) -> dict:
        values = json.loads((folder / "train_metrics.json").read_text())
        return {k: v for k, v in values.items() if k not in TIMING}

    reference, compared, mismatches = metrics(full), 0, []
    for step in (1, 2, 3):
        copy = root / f"resumed_from_{step}"
        copy.mkdir()
        shutil.copytree(full / f"checkpoint-{step}", copy / f"checkpoint-{step}")
        resume = ["--output_dir", str(copy), "--resume_from_checkpoint", str(copy / f"checkpoint-{step}")]
        subprocess.run([CLI, *argv, *resume], check=True, capture_output=True, env=env)
        got = metrics(copy)
        for key in reference.keys() | got.keys():
            compared += 1
            if reference.get(key) != got.get(key):
                mismatches.append(
                    {
                        "from_checkpoint": step,
                        "metric": key,
                        "full": reference.get(key),
                        "resumed": got.get(key),
                    }
                )
    return {
        "resumed_runs": 3,
        "metrics_compared": compared,
        "resume_metric_mismatches": len(mismatches),
        "mismatches": mismatches,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "corpus").mkdir()
        corpus = run_corpus(root / "corpus")
        (root / "resume").mkdir()
        resume = run_resume(root / "resume")
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}",
        "date": time.strftime("%Y-%m-%d"),
        **corpus,
        **resume,
    }
    print(f"bad inputs tried:                {figures['bad_inputs']}")
    print(
        f"one clear line (exit 2, 1 line): {figures['one_clear_line']} ({figures['one_clear_line'] / figures['bad_inputs']:.0%})"
    )
    print(f"user files overwritten:          {figures['user_files_overwritten']} (target 0)")
    print(f"resume metric mismatches:        {figures['resume_metric_mismatches']} of {figures['metrics_compared']} "
          f"compared over {figures['resumed_runs']} resumed runs (target 0)")  # fmt: skip
    print(f"median seconds per bad input:    {figures['seconds_median']:.2f}")
    for failure in figures["failing"]:
        print(f"FAILING: {failure['argv']} -> exit {failure['exit']}: {failure['stderr'].strip()[:300]}")
    for mismatch in figures["mismatches"]:
        print(f"MISMATCH: {mismatch}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
