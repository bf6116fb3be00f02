"""Structured pruning (hf_cot_distill.compress.prune) on tiny Qwen2 / Llama models built locally."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from hf_cot_distill.compress.prune import PruneConfig, PruneReport, prune_model, refit_weight
from tests.tiny_models import tiny_llama, tiny_qwen2

VOCAB = 128
MODELS = {
    "qwen2": lambda: tiny_qwen2(seed=1),  # hidden 32, 4 heads / 2 KV heads (head_dim 8), intermediate 64
    "qwen2_8heads": lambda: tiny_qwen2(seed=2, num_attention_heads=8, num_key_value_heads=2),  # head_dim 4
    "llama": lambda: tiny_llama(seed=3),
}


def calibration(seed: int = 0, extra_pad: int = 0) -> list[dict[str, torch.Tensor]]:
    """Three right-padded batches [4, 16] (+ ``extra_pad`` more pad columns holding random token ids)."""
    gen, pad_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    batches = []
    for _ in range(3):
        ids = torch.randint(3, VOCAB, (4, 16), generator=gen)
        mask = torch.ones_like(ids)
        mask[1, 11:] = 0
        mask[3, 6:] = 0
        ids[mask == 0] = 0
        if extra_pad:
            ids = torch.cat([ids, torch.randint(3, VOCAB, (4, extra_pad), generator=pad_gen)], dim=1)
            mask = torch.cat([mask, torch.zeros(4, extra_pad, dtype=mask.dtype)], dim=1)
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


EVAL = calibration(seed=99)[0]


def logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**EVAL).logits


def pruned(name: str, **config: object) -> tuple[torch.nn.Module, torch.nn.Module, PruneReport]:
    """(original, pruned copy, report)."""
    original = MODELS[name]().eval()
    model = copy.deepcopy(original)
    return original, model, prune_model(model, calibration(), PruneConfig(**config))


def zero_rows(linear: torch.nn.Linear, rows: slice) -> None:
    linear.weight[rows] = 0
    if linear.bias is not None:
        linear.bias[rows] = 0


def masked_reference(original: torch.nn.Module, report: PruneReport) -> torch.nn.Module:
    """The unpruned model with the removed channels / heads / KV groups zeroed (no refit)."""
    ref = copy.deepcopy(original)
    d = ref.model.layers[0].self_attn.head_dim
    n_heads, n_kv = report.sizes_before["num_attention_heads"], report.sizes_before["num_key_value_heads"]
    with torch.no_grad():
        for rep in report.layers:
            mlp, attn = ref.model.layers[rep.layer].mlp, ref.model.layers[rep.layer].self_attn
            drop = sorted(set(range(report.sizes_before["intermediate_size"])) - set(rep.mlp_kept))
            mlp.gate_proj.weight[drop] = 0
            mlp.up_proj.weight[drop] = 0
            mlp.down_proj.weight[:, drop] = 0
            for head in set(range(n_heads)) - set(rep.q_heads_kept):
                rows = slice(head * d, (head + 1) * d)
                zero_rows(attn.q_proj, rows)
                attn.o_proj.weight[:, rows] = 0
            for group in set(range(n_kv)) - set(rep.kv_heads_kept):
                zero_rows(attn.k_proj, slice(group * d, (group + 1) * d))
                zero_rows(attn.v_proj, slice(group * d, (group + 1) * d))
    return ref


def test_pruned_shapes_config_and_parameter_count():
    _, model, report = pruned("qwen2_8heads", mlp_keep_ratio=0.25, kv_heads_keep=1, q_heads_per_kv_keep=2)
    hidden, d = 32, 4
    expected = {"intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": d}
    assert report.sizes_after == expected
    assert {key: getattr(model.config, key) for key in expected} == expected
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        assert attn.q_proj.weight.shape == (2 * d, hidden) and attn.q_proj.bias.shape == (2 * d,)
        assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (d, hidden)
        assert attn.k_proj.bias.shape == attn.v_proj.bias.shape == (d,)
        assert attn.o_proj.weight.shape == (hidden, 2 * d) and attn.num_key_value_groups == 2
        assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (16, hidden)
        assert mlp.down_proj.weight.shape == (hidden, 16)
        for lin in (
            attn.q_proj,
            attn.k_proj,
            attn.v_proj,
            attn.o_proj,
            mlp.gate_proj,
            mlp.up_proj,
            mlp.down_proj,
        ):
            assert (lin.out_features, lin.in_features) == tuple(lin.weight.shape)
    per_layer = 2 * d * hidden + 2 * d + 2 * (d * hidden + d) + hidden * 2 * d + 3 * 16 * hidden + 2 * hidden
    total = 2 * VOCAB * hidden + hidden + 2 * per_layer
    assert report.params_after == total == sum(p.numel() for p in model.parameters())
    assert report.params_before > total
    for rep in report.layers:  # uniform counts, group-major query heads inside the kept group
        assert len(rep.mlp_kept) == 16 and len(rep.kv_heads_kept) == 1 and len(rep.q_heads_kept) == 2
        assert all(h // 4 == rep.kv_heads_kept[0] for h in rep.q_heads_kept)
    json.dumps(report.to_dict())
    assert model(**EVAL).logits.shape == (4, 16, VOCAB)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(
    "config",
    [
        {"mlp_keep_ratio": 0.5},
        {"mlp_keep_ratio": 1.0, "q_heads_per_kv_keep": 1},
        {"mlp_keep_ratio": 1.0, "kv_heads_keep": 1},
        {"mlp_keep_ratio": 0.25, "kv_heads_keep": 1, "q_heads_per_kv_keep": 1},
        {"mlp_keep_ratio": 0.25, "kv_heads_keep": 1, "q_heads_per_kv_keep": 1, "criterion": "magnitude"},
    ],
    ids=["mlp", "q_heads", "kv_groups", "all", "all_magnitude"],
)
def test_no_refit_equals_masked_original(name, config):
    original, model, report = pruned(name, refit=False, **config)
    torch.testing.assert_close(logits(model), logits(masked_reference(original, report)), atol=1e-5, rtol=0)
    assert not torch.allclose(logits(model), logits(original), atol=1e-3)


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_save_reload_round_trip(name, tmp_path):
    _, model, _ = pruned(name, mlp_keep_ratio=0.5, kv_heads_keep=1, q_heads_per_kv_keep=1)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["intermediate_size"], config["num_attention_heads"], config["num_key_value_heads"]) == (
        32,
        1,
        1,
    )
    assert config["head_dim"] == 8
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    state = model.state_dict()
    assert keys == {k for k in state if k != "lm_head.weight" or not model.config.tie_word_embeddings}
    assert not any("mask" in k for k in keys)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(reloaded) is type(model)
    torch.testing.assert_close(logits(reloaded), logits(model), atol=0, rtol=0)
    prompt = EVAL["input_ids"][:1, :6]
    generated = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
    assert torch.equal(
        reloaded.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True), generated
    )
    # Without the cache every step recomputes the whole prefix: other shapes, so other float32 rounding
    # (here ~5e-8); the bound: 2 layers x <= 9 reductions of <= 64 terms, each <= 64 * 2^-24 relative to
    # the largest logit. Greedy decoding agrees up to the first top-2 near-tie within that (none here).
    kw = {"max_new_tokens": 6, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    cached, uncached = (model.generate(prompt, use_cache=c, **kw) for c in (True, False))
    assert torch.equal(cached.sequences, generated)
    tol = 2 * 9 * 64 * 2.0**-24 * float(torch.cat(cached.logits).abs().max())
    for step, (a, b) in enumerate(zip(cached.logits, uncached.logits)):
        torch.testing.assert_close(b, a, atol=tol, rtol=0, msg=f"step {step}")
        if not torch.equal(cached.sequences[:, : 7 + step], uncached.sequences[:, : 7 + step]):
            break  # both argmax within tol of each other: a near-tie, resolved differently
    else:
        assert torch.equal(uncached.sequences, generated)


def test_bfloat16_model_keeps_its_dtype():
    model = tiny_qwen2(seed=5).to(torch.bfloat16)
    report = prune_model(model, calibration(), PruneConfig(kv_heads_keep=1))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.isfinite(logits(model).float()).all()
    assert all(0 < rep.mlp_rel_error < 1 and 0 < rep.attn_rel_error < 1 for rep in report.layers)


def scaled_model() -> torch.nn.Module:
    """Qwen2 where 16 MLP channels per layer have huge down_proj columns but nearly silent activations."""
    model = tiny_qwen2(seed=4).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            channels = torch.arange(0, 64, 4)
            layer.mlp.down_proj.weight[:, channels] *= 20
            layer.mlp.up_proj.weight[channels] *= 0.02
    return model


@pytest.mark.parametrize("refit", [False, True])
def test_reconstruction_beats_magnitude(refit):
    errors = {}
    for criterion in ("reconstruction", "magnitude"):
        report = prune_model(scaled_model(), calibration(), PruneConfig(criterion=criterion, refit=refit))
        errors[criterion] = [rep.mlp_rel_error for rep in report.layers]
        if criterion == "magnitude":  # the weight norm keeps the large but silent channels
            assert all(set(range(0, 64, 4)) <= set(rep.mlp_kept) for rep in report.layers)
    assert all(r < 0.5 * m for r, m in zip(errors["reconstruction"], errors["magnitude"]))


def test_refit_lowers_reconstruction_error():
    config = {"mlp_keep_ratio": 0.25, "kv_heads_keep": 1, "q_heads_per_kv_keep": 1}
    _, _, with_refit = pruned("qwen2", **config)
    _, _, without = pruned("qwen2", refit=False, **config)
    for rep, base in zip(with_refit.layers, without.layers):
        assert (
            rep.mlp_rel_error < rep.mlp_rel_error_no_refit
            and rep.attn_rel_error < rep.attn_rel_error_no_refit
        )
        assert rep.mlp_rel_error < base.mlp_rel_error and rep.attn_rel_error < base.attn_rel_error
        assert base.mlp_rel_error == base.mlp_rel_error_no_refit


def test_reported_error_matches_the_layer_output():
    """Layer 0 MLP (its input is unchanged by MLP-only pruning): the error from the Gram matrix equals the
    error measured on the non-pad tokens' down_proj inputs."""
    original, model, report = pruned("qwen2", mlp_keep_ratio=0.5)
    inputs = []
    hook = original.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    with torch.no_grad():
        for batch in calibration():
            original(**batch)
        hook.remove()
        x = torch.cat([h[b["attention_mask"].bool()] for h, b in zip(inputs, calibration())]).double()
        keep = report.layers[0].mlp_kept
        target = x @ original.model.layers[0].mlp.down_proj.weight.double().T
        approx = x[:, keep] @ model.model.layers[0].mlp.down_proj.weight.double().T
    measured = float(((target - approx) ** 2).sum() / (target**2).sum())
    assert math.isclose(measured, report.layers[0].mlp_rel_error, rel_tol=1e-4)


def test_refit_matches_lstsq_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=gen, dtype=torch.float64) @ torch.randn(
        12, 12, generator=gen, dtype=torch.float64
    )
    weight = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    keep = torch.tensor([0, 2, 3, 7, 9, 11])
    gram = x.T @ x
    lam = 1e-3 * float(gram.diagonal().mean())
    design = torch.cat([x[:, keep], math.sqrt(lam) * torch.eye(6, dtype=torch.float64)])
    target = torch.cat([x @ weight.T, math.sqrt(lam) * weight[:, keep].T])
    reference = torch.linalg.lstsq(design, target).solution.T
    torch.testing.assert_close(refit_weight(weight, gram, keep, 1e-3), reference, atol=1e-9, rtol=1e-9)
    plain = torch.linalg.lstsq(x[:, keep], x @ weight.T).solution.T
    torch.testing.assert_close(refit_weight(weight.float(), gram, keep, 1e-12), plain, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "config", [{"mlp_keep_ratio": 1.0}, {"mlp_keep_ratio": 1.0, "kv_heads_keep": 2, "q_heads_per_kv_keep": 2}]
)
def test_keeping_everything_is_a_no_op(config):
    original, model, report = pruned("qwen2", **config)
    assert torch.equal(logits(model), logits(original))
    assert report.params_after == report.params_before


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"mlp_keep_ratio": 0.0}, "mlp_keep_ratio"),
        ({"mlp_keep_ratio": 1.5}, "mlp_keep_ratio"),
        ({"kv_heads_keep": 0}, "kv_heads_keep"),
        ({"q_heads_per_kv_keep": 1.5}, "q_heads_per_kv_keep"),
        ({"criterion": "random"}, "criterion"),
        ({"refit": "yes"}, "refit"),
        ({"ridge": -1.0}, "ridge"),
        ({"ridge": float("nan")}, "ridge"),
    ],
)
def test_bad_config_names_the_field(config, field):
    with pytest.raises(ValueError, match=f"PruneConfig.{field}="):
        PruneConfig(**config)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kv_heads_keep": 3}, "kv_heads_keep=3 is out of range"),
        ({"q_heads_per_kv_keep": 3}, "q_heads_per_kv_keep=3"),
    ],
)
def test_keep_counts_out_of_range(config, message):
    with pytest.raises(ValueError, match=message):
        prune_model(tiny_qwen2(), calibration(), PruneConfig(**config))


def test_bad_inputs_are_refused():
    all_pad = [
        {
            "input_ids": torch.ones(2, 4, dtype=torch.long),
            "attention_mask": torch.zeros(2, 4, dtype=torch.long),
        }
    ]
    for data in ([], all_pad):
        with pytest.raises(ValueError, match="calibration has no non-pad token"):
            prune_model(tiny_qwen2(), data, PruneConfig())
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    with pytest.raises(ValueError, match="unsupported architecture GPT2LMHeadModel"):
        prune_model(gpt2, calibration(), PruneConfig())
    broken = tiny_qwen2()
    with torch.no_grad():
        broken.model.layers[1].mlp.gate_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite .* layer 1 mlp.down_proj"):
        prune_model(broken, calibration(), PruneConfig())


def test_padding_does_not_change_the_statistics():
    config = PruneConfig(mlp_keep_ratio=0.5, kv_heads_keep=1, q_heads_per_kv_keep=1)
    model = MODELS["qwen2"]()
    plain = prune_model(copy.deepcopy(model), calibration(), config)
    padded = prune_model(copy.deepcopy(model), calibration(extra_pad=5), config)
    assert padded.calibration_tokens == plain.calibration_tokens
    for a, b in zip(plain.layers, padded.layers):
        assert (a.mlp_kept, a.q_heads_kept, a.kv_heads_kept) == (b.mlp_kept, b.q_heads_kept, b.kv_heads_kept)
        assert math.isclose(a.mlp_rel_error, b.mlp_rel_error, rel_tol=1e-4)
        assert math.isclose(a.attn_rel_error, b.attn_rel_error, rel_tol=1e-4)
