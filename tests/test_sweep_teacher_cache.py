"""`teacher_cache: auto` in sweeps: one cache per group of points that share teacher, tokenizer,
data, encoding and temperature, built before training; every point trains from it; re-runs reuse
it; points a cache cannot serve are refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hf_cot_distill.cli import main
from hf_cot_distill.pipelines import cache_teacher
from hf_cot_distill.pipelines.sweep import load_sweep
from hf_cot_distill.trainers.teacher_cache import settings_dict
from tests.test_train_cli import _messages_dataset, _tiny_pair
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes/tiny/kd_messages.yaml")
LEAD_SPANS = "truncation_kwargs: [{lead_span_proportion: 0.5}, {lead_span_proportion: 1.0}]"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep_cache")
    return _tiny_pair(tmp, tiny_qwen2_tokenizer()), _messages_dataset(tmp)


def _spec(tmp_path, setup, grid: str, options: str = "", name: str = "sweep") -> tuple[Path, Path]:
    models, data = setup
    spec, root = tmp_path / f"{name}.yaml", tmp_path / name
    spec.write_text(
        f"recipe: {RECIPE}\noutput_root: {root}\n"
        f"grid:\n  {grid.replace(chr(10), chr(10) + '  ')}\n"
        f"set:\n  model_name_or_path: {models['student']}\n  teacher_model_name_or_path: {models['teacher']}\n"
        f"  dataset_name: {data}\n  max_steps: 2\n  teacher_cache: auto\n" + options
    )
    return spec, root


def _stamps(folder: Path) -> dict[Path, int]:
    """Every file's mtime but the summary's (rewritten by every run)."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.parent != folder}


def test_one_cache_for_the_sweep_every_point_trains_from_it(tmp_path, setup, monkeypatch, capsys):
    spec, root = _spec(tmp_path, setup, f"supervision_preset: [cot, cot+answer]\n{LEAD_SPANS}")
    assert main(["sweep", "--config", str(spec)]) == 0
    cache = root / "teacher_cache"
    assert [p.parent for p in root.rglob("cache_info.json")] == [cache]  # exactly one cache built
    info = json.loads((cache / "cache_info.json").read_text())
    assert info["complete"] and info["settings"]["sections"] == ["cot", "answer"]  # the union
    assert (info["settings"]["mode"], info["settings"]["samples"]) == ("sampled", 12)  # the defaults
    summary = json.loads((root / "summary.json").read_text())
    assert len(summary) == 4 and {s["teacher_cache"] for s in summary} == {str(cache)}
    for entry in summary:
        out = Path(entry["output_dir"])
        record = json.loads((out / "sweep_point.json").read_text())
        assert record["settings"]["teacher_cache"] == str(cache)
        assert record["teacher_cache_build"] == info["settings"]
        assert json.loads((out / "training_args.json").read_text())["teacher_cache"] == str(cache)
        assert f"(from the teacher cache {cache})" in (out / "README.md").read_text()
        logs = [r for r in json.loads((out / "log_history.json").read_text()) if "flops_teacher" in r]
        assert logs and all(float(r["flops_teacher"]) == 0 for r in logs)  # no teacher forward
    full = root / "supervision_preset=cot+answer__lead_span_proportion=1.0"
    assert any("kd/answer" in r for r in json.loads((full / "log_history.json").read_text()))

    # a second run skips every point and builds nothing
    stamps = _stamps(root)
    original = cache_teacher.run_cache_teacher

    def no_build(*args, **kwargs):
        raise AssertionError("the cache was built again")

    monkeypatch.setattr(cache_teacher, "run_cache_teacher", no_build)
    assert main(["sweep", "--config", str(spec)]) == 0
    assert _stamps(root) == stamps  # nothing trained or written but the summary

    # a point left to train: the complete cache is reused as it is (not rebuilt)
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[-1])
        return original(*args, **kwargs)

    monkeypatch.setattr(cache_teacher, "run_cache_teacher", spy)
    shutil.rmtree(full)
    cache_files = {p: t for p, t in stamps.items() if cache in p.parents}
    capsys.readouterr()
    assert main(["sweep", "--config", str(spec)]) == 0
    assert calls == [cache] and "the teacher cache is complete already" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in cache_files} == cache_files
    assert json.loads((full / "sweep_point.json").read_text())["settings"]["teacher_cache"] == str(cache)


@pytest.mark.parametrize(
    "grid, point, message",
    [
        ("divergence: [forward_kl, jsd]", "divergence=jsd", "divergence='jsd' with teacher_cache"),
        ("kd_mode: [supervised, on_policy]", "kd_mode=on_policy", "kd_mode='on_policy' with teacher_cache"),
        (
            "section_kd_temperatures: [{cot: 2.0}]",
            "cot=2.0",
            "section_kd_temperatures={'cot': 2.0} with teacher_cache",
        ),
    ],
    ids=["divergence", "kd_mode", "section_temperatures"],
)
def test_a_point_a_cache_cannot_serve_is_refused_by_name(tmp_path, setup, capsys, grid, point, message):
    spec, root = _spec(tmp_path, setup, grid)
    assert main(["sweep", "--config", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}: grid point {point} (teacher_cache: auto -> {root / 'teacher_cache'}): " in err
    assert message in err and not root.exists()  # refused before anything is created


# --------------------------------------------------------------------------- planning (no training)
@pytest.fixture
def fakes(monkeypatch):
    """``run_cache_teacher`` and ``run_training`` replaced by stubs that record their calls."""
    import hf_cot_distill.pipelines.train

    calls: dict[str, list] = {"caches": [], "trained": []}

    def run_cache_teacher(model_args, data_args, kd_args, settings, out_dir, progress=True):
        calls["caches"].append((Path(out_dir), settings))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        info = {
            "settings": settings_dict(settings),
            "encoding": cache_teacher.encoding_settings(data_args),
            "teacher": kd_args.teacher_model_name_or_path,
            "complete": True,
        }
        (Path(out_dir) / "cache_info.json").write_text(json.dumps(info))
        return Path(out_dir)

    def run_training(model_args, data_args, kd_args, recipe_path=None):
        calls["trained"].append((Path(kd_args.output_dir).name, kd_args.teacher_cache, kd_args.temperature))
        Path(kd_args.output_dir, "train_metrics.json").write_text("{}")
        return {}

    monkeypatch.setattr(cache_teacher, "run_cache_teacher", run_cache_teacher)
    monkeypatch.setattr(hf_cot_distill.pipelines.train, "run_training", run_training)
    return calls


def test_groups_options_and_points_that_distil_nothing(tmp_path, setup, fakes, capsys):
    spec, root = _spec(
        tmp_path,
        setup,
        "temperature: [1.0, 2.0]\nkd_weight: [0.0, 0.5]",
        "teacher_cache_options: {mode: topk, k: 8}\n",
    )
    assert main(["sweep", "--config", str(spec)]) == 0
    first, second = root / "teacher_cache", root / "teacher_cache-2"
    assert [(out, s.temperature, s.mode, s.k, s.sections) for out, s in fakes["caches"]] == [
        (first, 1.0, "topk", 8, ("cot",)),
        (second, 2.0, "topk", 8, ("cot",)),
    ]
    assert fakes["trained"] == [
        ("temperature=1.0__kd_weight=0.0", None, 1.0),  # distils nothing: no cache
        ("temperature=1.0__kd_weight=0.5", str(first), 1.0),
        ("temperature=2.0__kd_weight=0.0", None, 2.0),
        ("temperature=2.0__kd_weight=0.5", str(second), 2.0),
    ]
    assert "grid point temperature=1.0__kd_weight=0.0: teacher_cache: auto -> none (kd_weight=0.0" in (
        capsys.readouterr().out
    )
    record = json.loads((root / "temperature=1.0__kd_weight=0.0" / "sweep_point.json").read_text())
    assert record["settings"]["teacher_cache"] is None and "teacher_cache_build" not in record
    record = json.loads((root / "temperature=2.0__kd_weight=0.5" / "sweep_point.json").read_text())
    assert record["teacher_cache_build"]["k"] == 8 and record["teacher_cache_build"]["temperature"] == 2.0

    # everything finished: nothing is built or trained again
    assert main(["sweep", "--config", str(spec)]) == 0
    assert len(fakes["caches"]) == 2 and len(fakes["trained"]) == 4
    # other cache settings: the caches and the points trained from them are stale, refused
    spec.write_text(spec.read_text().replace("k: 8", "k: 16"))
    capsys.readouterr()
    assert main(["sweep", "--config", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"the teacher cache {first} was built with other settings (settings.k was 8, now 16)" in err
    assert "1 more teacher cache folder is refused too; 2 more point folders are refused too" in err
    assert f"delete {first} and the point folders trained from it (temperature=1.0__kd_weight=0.5)" in err
    assert len(fakes["caches"]) == 2 and len(fakes["trained"]) == 4


def test_cache_sections_option(tmp_path, setup, fakes, capsys):
    spec, root = _spec(tmp_path, setup, "seed: [0]", "teacher_cache_options: {sections: all}\n")
    assert main(["sweep", "--config", str(spec)]) == 0
    assert [s.sections for _, s in fakes["caches"]] == [("prompt", "cot", "answer")]
    spec, root = _spec(
        tmp_path,
        setup,
        "supervision_preset: [cot+answer]",
        "teacher_cache_options: {sections: cot}\n",
        "other",
    )
    assert main(["sweep", "--config", str(spec)]) == 2
    err = capsys.readouterr().err
    assert (
        "grid point supervision_preset=cot+answer distils ['answer'], which teacher_cache_options.sections"
        in err
    )
    assert not root.exists()


def test_no_teacher_no_cache(tmp_path, fakes, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    spec, root = tmp_path / "s.yaml", tmp_path / "runs"
    spec.write_text(
        f"recipe: recipes/tiny/cot_icl_lab_scratch.yaml\noutput_root: {root}\ngrid: {{seed: [0]}}\n"
        "set: {teacher_cache: auto}\n"
    )
    assert main(["sweep", "--config", str(spec)]) == 0
    assert fakes["caches"] == [] and fakes["trained"] == [("seed=0", None, 1.0)]
    assert "teacher_cache: auto -> none (no teacher_model_name_or_path" in capsys.readouterr().out
    assert not (root / "teacher_cache").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ("[sampled]", "teacher_cache_options must map cache settings"),
        ("{temperature: 2.0}", "unknown keys ['temperature']; use ['mode', 'samples'"),
        ("{samples: 0}", "teacher_cache_options: samples=0: must be"),
        ("{mode: exact}", "teacher_cache_options: mode='exact': must be one of"),
        ("{sections: [cot, reasoning]}", "teacher_cache_options: sections='reasoning': must be one of"),
    ],
)
def test_bad_cache_options(tmp_path, options, message):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"recipe: r.yaml\noutput_root: o\ngrid: {{seed: [0]}}\nteacher_cache_options: {options}\n"
    )
    with pytest.raises(ValueError) as err:
        load_sweep(spec)
    assert str(err.value).startswith(f"{spec}: ") and message in str(err.value)


def test_auto_in_the_base_recipe(tmp_path, setup, fakes):
    models, data = setup
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(Path(RECIPE).read_text() + "teacher_cache: auto\n")
    spec, root = tmp_path / "s.yaml", tmp_path / "runs"
    spec.write_text(
        f"recipe: {recipe}\noutput_root: {root}\ngrid: {{kd_weight: [0.0, 0.5]}}\n"
        f"set: {{model_name_or_path: {models['student']}, teacher_model_name_or_path: {models['teacher']}, "
        f"dataset_name: {data}}}\n"
    )
    assert main(["sweep", "--config", str(spec)]) == 0
    assert [out for out, _ in fakes["caches"]] == [root / "teacher_cache"]
    assert [t[:2] for t in fakes["trained"]] == [
        ("kd_weight=0.0", None),
        ("kd_weight=0.5", str(root / "teacher_cache")),
    ]
