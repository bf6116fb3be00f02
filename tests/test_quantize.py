"""Post-training quantization (hf_cot_distill.compress.quantize): RTN / GPTQ numerics, the model driver,
and the compressed-tensors checkpoint loaded back by transformers on CPU. Tiny models, a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import Qwen2ForCausalLM

from hf_cot_distill.compress import quantize as quantize_module
from hf_cot_distill.compress.quantize import (
    QuantizeConfig,
    dequantize,
    gptq_quantize_weight,
    load_quantized,
    quantize_model,
    quantize_weight,
    save_quantized,
)
from tests.tiny_models import tiny_qwen2, tiny_qwen2_config

pytest.importorskip("compressed_tensors", reason="compress extra (compressed-tensors) not installed")


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Tiny matmuls: one intra-op thread is faster (and shares the CPU fairly)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {"hidden_size": 64, "intermediate_size": 128, "vocab_size": 128}  # 4 heads, 2 KV heads, 2 layers


def tiny_model(seed: int = 0) -> torch.nn.Module:
    return tiny_qwen2(seed=seed, **TINY).eval()


def calibration(n_batches: int = 3, batch: int = 4, length: int = 32, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"input_ids": torch.randint(3, TINY["vocab_size"], (batch, length), generator=g)}
        for _ in range(n_batches)
    ]


def eval_ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(3, TINY["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


def correlated_inputs(n: int, dim: int, seed: int = 0, rank: int = 32) -> torch.Tensor:
    """``[n, dim]`` float64 activations with strongly correlated columns: rank ``rank`` plus 10% noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, rank, generator=g, dtype=torch.float64)
    mix = torch.randn(rank, dim, generator=g, dtype=torch.float64)
    return z @ mix + 0.1 * torch.randn(n, dim, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------- 1. RTN quantize / dequantize


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, None])
def test_rtn_error_bound_and_code_range(bits: int, group_size: int | None, symmetric: bool) -> None:
    W = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    W[3] = 0.0  # an all-zero row: a tiny scale, zero codes, no NaN
    q, scale, zero = quantize_weight(W, bits, group_size, symmetric)
    n_groups = 96 // (group_size or 96)
    assert q.dtype == torch.int8 and q.shape == W.shape
    assert scale.shape == zero.shape == (48, n_groups) and scale.dtype == W.dtype
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert int(q.min()) >= lo and int(q.max()) <= hi
    assert int(zero.min()) >= lo and int(zero.max()) <= hi
    if symmetric:
        assert not zero.any()
    W_hat = dequantize(q, scale, zero, group_size)
    assert W_hat.dtype == W.dtype and torch.isfinite(W_hat).all()
    assert not W_hat[3].any()
    # |W - Ŵ| <= scale / 2 for every element of every group (+ the fp32 rounding of Ŵ itself)
    per_elem_scale = scale.double().repeat_interleave(96 // n_groups, dim=1)
    err = (W.double() - W_hat.double()).abs()
    ulp = torch.finfo(torch.float32).eps * W.double().abs()
    assert bool((err <= per_elem_scale / 2 + ulp).all())
    # the whole code range is used: the largest |w| of each row/group maps near the ends
    assert int(q.max()) == hi or int(q.min()) == lo


def test_rtn_more_bits_and_groups_are_more_accurate() -> None:
    W = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    W[:, 5] *= 20  # an outlier input column: per-channel scales suffer, groups contain it
    err = {}
    for bits in (4, 8):
        for gs in (32, None):
            W_hat = dequantize(*quantize_weight(W, bits, gs, True), gs)
            err[bits, gs] = float((W - W_hat).norm() / W.norm())
    assert err[8, 32] < err[4, 32] / 8 and err[8, None] < err[4, None] / 8
    assert err[4, 32] < err[4, None] and err[8, 32] < err[8, None]


def test_dequantize_matches_compressed_tensors() -> None:
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize as ct_dequantize

    W = torch.randn(16, 64, generator=torch.Generator().manual_seed(2))
    for symmetric in (True, False):
        q, scale, zero = quantize_weight(W, 4, 32, symmetric)
        args = QuantizationArgs(num_bits=4, symmetric=symmetric, strategy="group", group_size=32)
        theirs = ct_dequantize(q, scale, None if symmetric else zero, args=args)
        assert torch.equal(dequantize(q, scale, zero, 32), theirs)


def test_group_size_must_divide_in_features() -> None:
    with pytest.raises(ValueError, match="group_size=48 does not divide in_features=64"):
        quantize_weight(torch.randn(8, 64), 4, 48, True)
    model = tiny_model()
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.q_proj: group_size=48"):
        quantize_model(model, calibration(1), QuantizeConfig(group_size=48))


# ----------------------------------------------------------------------------- 2. GPTQ


def reference_gptq(
    W: torch.Tensor,
    H: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    damp: float,
    act_order: bool = False,
) -> torch.Tensor:
    """Slow textbook GPTQ/OBQ in float64: one column at a time with an explicitly downdated inverse
    Hessian (no Cholesky, no blocks). Returns the int codes ``[out, in]``."""
    W = W.double().clone()
    H = H.double().clone()
    out_f, in_f = W.shape
    gs = group_size or in_f
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def params(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # w [out, gs] -> scale, zero [out]
        lo, hi = w.min(1).values.clamp(max=0), w.max(1).values.clamp(min=0)
        if symmetric:
            scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        else:
            scale = (hi - lo) / (qmax - qmin)
        scale = scale.float().double()  # the stored fp32 scale
        zero = torch.zeros_like(scale) if symmetric else torch.round(qmin - lo / scale).clamp(qmin, qmax)
        return scale, zero

    diag = torch.diagonal(H)
    H[diag == 0, diag == 0] = 1.0
    H += damp * torch.diagonal(H).mean() * torch.eye(in_f, dtype=torch.float64)
    static = act_order or group_size is None
    fixed = [params(W[:, g * gs : (g + 1) * gs]) for g in range(in_f // gs)] if static else []
    order = (
        torch.argsort(torch.diagonal(H), descending=True, stable=True) if act_order else torch.arange(in_f)
    )
    W, H = W[:, order], H[order][:, order]
    Hinv = torch.linalg.inv(H)
    Q = torch.zeros_like(W)
    current: tuple[torch.Tensor, torch.Tensor] | None = None
    for j in range(in_f):
        if static:
            scale, zero = fixed[int(order[j]) // gs]
        else:
            if j % gs == 0:
                current = params(W[:, j : j + gs])
            scale, zero = current
        q = torch.round(W[:, j] / scale + zero).clamp(qmin, qmax)
        Q[:, j] = q
        err = (W[:, j] - (q - zero) * scale) / Hinv[j, j]
        W[:, j:] -= err[:, None] * Hinv[j, j:][None, :]
        Hinv = Hinv - Hinv[:, j : j + 1] @ Hinv[j : j + 1, :] / Hinv[j, j]
    return Q[:, torch.argsort(order)].to(torch.int8)


@pytest.mark.parametrize(
    ("bits", "group_size", "symmetric", "block_size", "act_order"),
    [
        (4, 16, True, 8, False),  # block < group: effective block rounded up to the group
        (4, 16, False, 24, False),  # block not a multiple of the group
        (8, 16, True, 32, False),
        (4, None, True, 10, False),  # per channel, blocks not dividing the columns
        (4, None, False, 64, False),
        (4, 16, True, 24, True),  # act_order with static groups
    ],
)
def test_gptq_matches_unblocked_reference(
    bits: int, group_size: int | None, symmetric: bool, block_size: int, act_order: bool
) -> None:
    X = correlated_inputs(256, 64)
    H = 2 * X.T @ X / X.shape[0]
    H[7, :] = H[:, 7] = 0.0  # a column never seen in calibration
    W = torch.randn(12, 64, generator=torch.Generator().manual_seed(3))
    config = QuantizeConfig(
        bits=bits,
        group_size=group_size,
        symmetric=symmetric,
        block_size=block_size,
        act_order=act_order,
        dtype="float64",
    )
    q, scale, zero, W_hat = gptq_quantize_weight(W, H, config)
    expected = reference_gptq(W, H, bits, group_size, symmetric, config.damp, act_order)
    # Bit-exact codes are sound across CPUs: the two float64 solves differ by <= 2e-13 codes here, while no
    # pre-rounding value lies within 4e-8 of a rounding boundary, nor a scale within 1e-10 (relative) of
    # a float32 rounding midpoint.
    assert torch.equal(q, expected)
    assert W_hat.dtype == W.dtype and torch.equal(W_hat, dequantize(q, scale, zero, group_size))
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert int(q.min()) >= lo and int(q.max()) <= hi


@pytest.mark.parametrize(("bits", "group_size"), [(4, 32), (4, None), (8, 32)])
def test_gptq_reconstructs_layer_output_better_than_rtn(bits: int, group_size: int | None) -> None:
    X = correlated_inputs(512, 128, seed=4)
    H = 2 * X.T @ X / X.shape[0]
    W = torch.randn(64, 128, generator=torch.Generator().manual_seed(5))
    ref = X @ W.double().T

    def rel_err(W_hat: torch.Tensor) -> float:
        return float((ref - X @ W_hat.double().T).norm() / ref.norm())

    rtn = rel_err(dequantize(*quantize_weight(W, bits, group_size, True), group_size))
    _, _, _, W_hat = gptq_quantize_weight(W, H, QuantizeConfig(bits=bits, group_size=group_size))
    gptq = rel_err(W_hat)
    assert gptq < 0.6 * rtn, (gptq, rtn)


def test_gptq_rejects_non_finite_hessian() -> None:
    H = torch.eye(32, dtype=torch.float64)
    H[3, 3] = float("nan")
    with pytest.raises(ValueError, match="my.layer: the Hessian .* NaN/inf"):
        gptq_quantize_weight(torch.randn(4, 32), H, QuantizeConfig(group_size=None), name="my.layer")


# ----------------------------------------------------------------------------- model driver + checkpoint


def test_quantize_model_report_and_fake_quant() -> None:
    model, original = tiny_model(), tiny_model()
    report = quantize_model(model, calibration(), QuantizeConfig(bits=4, group_size=32))
    names = [r.name for r in report.layers]
    assert len(names) == 14 and names[0] == "model.layers.0.self_attn.q_proj"
    assert all(n.startswith("model.layers.") for n in names)
    assert report.num_quantized_params == sum(model.get_submodule(n).weight.numel() for n in names)
    assert report.num_calibration_tokens == 3 * 4 * 32 and all(r.tokens == 3 * 4 * 32 for r in report.layers)
    for name in names:  # the weight in memory is exactly the dequantized codes
        assert torch.equal(model.get_submodule(name).weight, report.quantized[name].dequantize())
    # sequential GPTQ lowers the layer output error versus RTN on the same inputs
    gptq = [r.error for r in report.layers]
    rtn = [r.rtn_error for r in report.layers]
    assert sum(gptq) < 0.9 * sum(rtn)
    assert all(g < r * 1.02 for g, r in zip(gptq, rtn))
    summary = report.to_dict()
    assert summary["config"]["bits"] == 4 and len(summary["layers"]) == 14
    json.dumps(summary)
    # untouched: embeddings, norms, lm_head
    for key, value in original.state_dict().items():
        if not any(key == f"{n}.weight" for n in names):
            assert torch.equal(model.state_dict()[key], value), key


def test_rtn_method_reports_rtn_error() -> None:
    report = quantize_model(
        tiny_model(), calibration(1), QuantizeConfig(bits=8, method="rtn", group_size=None, error_report=True)
    )
    assert all(r.error == r.rtn_error for r in report.layers)
    assert max(r.error for r in report.layers) < 0.02


def test_rtn_without_error_report_runs_no_forward_and_needs_no_calibration() -> None:
    model, calls = tiny_model(), []
    model.model.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
    config = QuantizeConfig(bits=4, group_size=32, method="rtn")
    assert config.error_report is False and not config.needs_calibration
    report = quantize_model(model, None, config)
    assert calls == [] and len(report.layers) == 14
    assert all(r.error is None and r.tokens == 0 for r in report.layers)
    assert report.to_dict()["mean_error"] is None
    original = tiny_model()
    for name, record in report.quantized.items():  # exactly round-to-nearest of the original weight
        q, scale, zero = quantize_weight(original.get_submodule(name).weight, 4, 32, True)
        assert torch.equal(record.q, q) and torch.equal(record.scale, scale), name
    with pytest.raises(ValueError, match="calibration=None: method='gptq' needs calibration"):
        quantize_model(tiny_model(), None, QuantizeConfig(group_size=32))


@pytest.mark.parametrize(
    ("bits", "group_size", "symmetric", "act_order"),
    [(8, None, True, False), (4, 32, True, False), (4, 32, False, False), (4, 32, True, True)],
)
def test_save_reload_same_logits_and_smaller(
    tmp_path: Path, bits: int, group_size: int | None, symmetric: bool, act_order: bool
) -> None:
    model = tiny_model()
    dense_dir = tmp_path / "fp32"
    model.save_pretrained(dense_dir)
    config = QuantizeConfig(bits=bits, group_size=group_size, symmetric=symmetric, act_order=act_order)
    report = quantize_model(model, calibration(), config)
    out = save_quantized(model, tmp_path / "q", report)

    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "generation_config.json", "model.safetensors", "quantization_report.json"]
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert qc["config_groups"]["group_0"]["weights"]["num_bits"] == bits
    assert qc["ignore"] == ["lm_head"]

    # on disk: linear weights at bits/32 of fp32, everything else as before
    linear_params = report.num_quantized_params
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        packed = {k: f.get_tensor(k) for k in f.keys() if k.endswith("weight_packed")}
        scales = {k: f.get_tensor(k) for k in f.keys() if k.endswith("weight_scale")}
        assert not any(k.endswith(".weight") and k[: -len(".weight")] in report.quantized for k in f.keys())
    assert len(packed) == 14
    packed_bytes = sum(t.numel() * t.element_size() for t in packed.values())
    assert packed_bytes == linear_params * bits // 8  # 4-bit: exactly 1/8 of the fp32 bytes
    scale_bytes = sum(t.numel() * t.element_size() for t in scales.values())
    dense_size = (dense_dir / "model.safetensors").stat().st_size
    q_size = (out / "model.safetensors").stat().st_size
    zero_bytes = 0 if symmetric else scale_bytes * bits // 32 + 14 * 64
    bound = dense_size - 4 * linear_params + packed_bytes + scale_bytes + zero_bytes + 4096  # + header
    assert q_size <= bound, (q_size, bound)
    assert q_size < (0.36 if bits == 4 else 0.45) * dense_size

    ids = eval_ids()
    expected = logits(model, ids)
    loaded = load_quantized(out)
    assert not loaded.training
    for name, record in report.quantized.items():  # decompressed at load: plain weights, as in memory
        assert torch.equal(loaded.get_submodule(name).weight, record.dequantize()), name
    torch.testing.assert_close(logits(loaded, ids), expected, atol=1e-5, rtol=0)
    # plain from_pretrained, no kwargs, works too
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    torch.testing.assert_close(logits(plain, ids), expected, atol=1e-5, rtol=0)


def test_save_reload_bf16_tied(tmp_path: Path) -> None:
    """bf16 scales; tied embeddings saved once. Compared with a dense save/reload of the same
    fake-quantized model (``.to(bfloat16)`` also casts the rotary ``inv_freq``, a reload does not)."""
    model = tiny_qwen2(**TINY, tie_word_embeddings=True).to(torch.bfloat16).eval()
    report = quantize_model(model, calibration(1), QuantizeConfig(bits=4, group_size=32))
    assert report.quantized["model.layers.0.mlp.up_proj"].scale.dtype == torch.bfloat16
    out = save_quantized(model, tmp_path / "q", report)
    model.save_pretrained(tmp_path / "dense")
    from transformers import AutoModelForCausalLM

    dense = AutoModelForCausalLM.from_pretrained(str(tmp_path / "dense")).eval()
    loaded = load_quantized(out)
    assert loaded.dtype == torch.bfloat16
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ids = eval_ids()
    assert torch.equal(logits(loaded, ids), logits(dense, ids))


def test_quantized_logits_close_to_original() -> None:
    original = tiny_model()
    ids = eval_ids(seed=7)
    ref = logits(original, ids)
    rel = {}
    for bits in (8, 4):
        model = tiny_model()
        quantize_model(model, calibration(), QuantizeConfig(bits=bits, group_size=32))
        rel[bits] = float((logits(model, ids) - ref).norm() / ref.norm())
    assert rel[8] < 0.02 and rel[4] < 0.3
    assert rel[8] < rel[4] / 5, rel


def test_save_refuses_a_model_changed_after_quantization(tmp_path: Path) -> None:
    model = tiny_model()
    report = quantize_model(model, calibration(1), QuantizeConfig(bits=8, group_size=32))
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] += 1.0
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj: the weight differs"):
        save_quantized(model, tmp_path / "q", report.quantized)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.copy_(
            report.quantized["model.layers.1.mlp.up_proj"].dequantize()
        )
    out = save_quantized(model, tmp_path / "q", report.quantized)  # the bare mapping: no report file
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]


def test_only_the_decoder_layers_are_quantized_beside_a_bigger_module_list() -> None:
    """50 extra Linear heads in a ModuleList (more Linears than the decoder): not the decoder, untouched."""
    model = tiny_model()
    model.heads = torch.nn.ModuleList([torch.nn.Linear(64, 64) for _ in range(50)])
    heads = [h.weight.clone() for h in model.heads]
    report = quantize_model(model, calibration(1), QuantizeConfig(bits=8, group_size=32))
    assert len(report.layers) == 14 and all(r.name.startswith("model.layers.") for r in report.layers)
    assert all(torch.equal(h.weight, w) for h, w in zip(model.heads, heads))


def test_a_sliding_window_layer_is_calibrated_with_its_own_mask() -> None:
    """Layer 1 attends over 4 tokens: its o_proj Hessian is that of the model's own forward (layer 0's
    full causal mask would give other inputs). Layer 0 stays in full precision so that forward feeds
    layer 1 exactly what the quantizer saw."""
    config = tiny_qwen2_config(**TINY)
    config.use_sliding_window, config.sliding_window, config.max_window_layers = True, 4, 1
    config.layer_types = ["full_attention", "sliding_attention"]
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    name = "model.layers.1.self_attn.o_proj"
    o_proj, data = model.get_submodule(name), calibration(2)
    H = torch.zeros(64, 64, dtype=torch.float64)

    def accumulate(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].reshape(-1, 64).double()
        H.addmm_(x.T, x)

    handle = o_proj.register_forward_pre_hook(accumulate)
    for batch in data:
        logits(model, batch["input_ids"])
    handle.remove()
    quant = QuantizeConfig(bits=4, group_size=32, ignore=("lm_head", r"re:layers\.0\."), dtype="float64")
    expected = gptq_quantize_weight(o_proj.weight, H.mul_(2.0 / (2 * 4 * 32)), quant, name=name)[0]
    report = quantize_model(model, data, quant)
    assert torch.equal(report.quantized[name].q, expected)


# ----------------------------------------------------------------------------- 5. ignore + config errors


def test_ignore_leaves_modules_in_full_precision(tmp_path: Path) -> None:
    model, original = tiny_model(), tiny_model()
    config = QuantizeConfig(
        bits=4, group_size=32, ignore=("lm_head", "mlp.down_proj", r"re:layers\.1\.self_attn")
    )
    report = quantize_model(model, calibration(1), config)
    skipped = ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    skipped += [f"model.layers.1.self_attn.{p}_proj" for p in "qkvo"]
    assert len(report.layers) == 14 - len(skipped) and not set(skipped) & set(report.quantized)
    for name in [*skipped, "lm_head"]:
        assert torch.equal(model.get_submodule(name).weight, original.get_submodule(name).weight), name
    assert not torch.equal(
        model.model.layers[0].mlp.up_proj.weight, original.model.layers[0].mlp.up_proj.weight
    )
    out = save_quantized(model, tmp_path / "q", report)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["ignore"] == sorted(
        ["lm_head", *skipped]
    )
    ids = eval_ids()
    torch.testing.assert_close(logits(load_quantized(out), ids), logits(model, ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bits": 3}, "bits"),
        ({"bits": 16}, "bits"),
        ({"group_size": 0}, "group_size"),
        ({"group_size": 32.0}, "group_size"),
        ({"symmetric": "yes"}, "symmetric"),
        ({"method": "awq"}, "method"),
        ({"damp": -0.1}, "damp"),
        ({"damp": 2.0}, "damp"),
        ({"block_size": 0}, "block_size"),
        ({"act_order": 1}, "act_order"),
        ({"ignore": "lm_head"}, "ignore"),
        ({"method": "QuantEase"}, "method"),
        ({"dtype": "bfloat16"}, "dtype"),
        ({"error_report": "yes"}, "error_report"),
        ({"quantease_iters": -1}, "quantease_iters"),
        ({"quantease_init": "rtn"}, "quantease_init"),
        ({"ignore": ("re:(",)}, "ignore"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"QuantizeConfig\.{field}="):
        QuantizeConfig(**kwargs)


def test_defaults_are_static_act_order_float32_and_no_rtn_calibration() -> None:
    config = QuantizeConfig()
    assert config.act_order and config.method == "gptq" and config.dtype == "float32" and config.error_report
    assert QuantizeConfig(method="rtn").error_report is False


def test_config_normalises_per_channel() -> None:
    assert QuantizeConfig(group_size=-1).group_size is None
    assert QuantizeConfig(ignore=["lm_head"]).ignore == ("lm_head",)


def test_model_level_errors() -> None:
    with pytest.raises(ValueError, match="calibration is empty"):
        quantize_model(tiny_model(), [], QuantizeConfig(group_size=32))
    ids = torch.randint(3, 128, (2, 8))
    all_pad = [{"input_ids": ids, "attention_mask": torch.zeros_like(ids)}]
    with pytest.raises(ValueError, match="calibration is empty"):
        quantize_model(tiny_model(), all_pad, QuantizeConfig(group_size=32))
    with pytest.raises(ValueError, match="no nn.Linear left to quantize"):
        quantize_model(tiny_model(), calibration(1), QuantizeConfig(group_size=32, ignore=("re:.*",)))
    no_linears = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4))
    with pytest.raises(ValueError, match="no decoder layers with nn.Linear"):
        quantize_model(no_linears, calibration(1), QuantizeConfig())
    model = tiny_model()
    with torch.no_grad():
        model.model.layers[1].input_layernorm.weight[0] = float("nan")
    with pytest.raises(
        ValueError, match=r"model\.layers\.1\.self_attn\.\{q_proj,k_proj,v_proj\}: the Hessian .* NaN/inf"
    ):
        quantize_model(model, calibration(1), QuantizeConfig(group_size=32))


# ----------------------------------------------------------------------------- 6. padding


# Two runs on the same tokens compute the calibration activations through different kernels when the
# sequence length, padding, thread count or CPU differ, so they agree only up to float32 rounding; and
# GPTQ rounds to a grid, where a perturbation that small can break a tie (a pre-rounding value at a
# half-integer: the most negative weight of a group sits at -7.5 codes by construction of its scale).
# The padding test compares with tolerances derived from that rounding, not bit for bit.
_EPS32 = torch.finfo(torch.float32).eps  # 2^-23; unit roundoff u = eps / 2


def _gptq_calls(
    model: torch.nn.Module,
    batches: list[dict],
    config: QuantizeConfig,
    monkeypatch: pytest.MonkeyPatch,
    replace: dict | None = None,
) -> tuple[object, dict]:
    """``quantize_model(model, batches, config)`` and, per linear, the ``(W, H, (q, scale, zero, Ŵ))`` of
    its GPTQ call. With ``replace`` (the calls of another run) each linear then gets that run's result,
    so later layers see the same weights in both runs and each comparison isolates its own inputs."""
    calls: dict = {}
    gptq = quantize_module.gptq_quantize_weight

    def spy(W: torch.Tensor, H: torch.Tensor, config: QuantizeConfig, name: str = "weight") -> tuple:
        calls[name] = (W.clone(), H.clone(), gptq(W, H, config, name=name))
        return replace[name][2] if replace is not None else calls[name][2]

    with monkeypatch.context() as m:
        m.setattr(quantize_module, "gptq_quantize_weight", spy)
        report = quantize_model(model, batches, config)
    return report, calls


def _gptq_replay(
    W: torch.Tensor,
    H: torch.Tensor,
    config: QuantizeConfig,
    target_q: torch.Tensor,
    tau: float,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[tuple, int]:
    """GPTQ of ``W`` on ``H`` that rounds like ``target_q`` wherever the pre-rounding value lies within
    ``tau`` codes of a rounding boundary (a tie that a perturbation within ``tau`` may break either way),
    to nearest elsewhere; so after a broken tie it follows the same branch as the run that gave
    ``target_q``. Returns its ``(q, scale, zero, Ŵ)`` and the number of codes of ``target_q`` that are
    not the nearest one and not the other side of such a tie. Columns in order (no ``act_order``)."""
    assert not config.act_order
    nearest_round, columns, unexplained = quantize_module._round, iter(range(W.shape[1])), 0

    def round_like_target(
        w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int
    ) -> torch.Tensor:
        nonlocal unexplained
        x = w / scale + zero  # the value _round rounds
        nearest = nearest_round(w, scale, zero, bits)
        target = target_q[:, next(columns)].to(nearest.dtype)
        tie = (x - x.floor() - 0.5).abs() <= tau
        unexplained += int(((target != nearest) & ~(tie & ((target - nearest).abs() == 1))).sum())
        return torch.where(tie, target, nearest)

    with monkeypatch.context() as m:
        m.setattr(quantize_module, "_round", round_like_target)
        result = gptq_quantize_weight(W, H, config)
    return result, unexplained


def _gptq_differences(
    plain: dict,
    other: dict,
    config: QuantizeConfig,
    h_rtol: float,
    monkeypatch: pytest.MonkeyPatch,
    tau: float | None = None,
) -> dict[str, dict[str, float]]:
    """Per linear, ``other``'s GPTQ call against ``plain``'s: ``hessian`` = ‖H' − H‖_F over its
    tolerance ``h_rtol · tr(H)``; ``unexplained`` codes (see ``_gptq_replay``, on ``plain``'s W and H,
    following ``other``'s ties); ``scale`` / ``weight`` = worst relative difference of ``other``'s scales /
    dequantized weights to the replay's, over their tolerance; ``tau``: the tie tolerance (codes), derived
    from the two Hessians unless given. Within tolerance: all <= 1, unexplained 0."""
    out = {}
    for name, (W, H, _) in plain.items():
        _, H_other, (q, scale, zero, w_hat) = other[name]
        # A Hessian off by ε = ‖δH‖_F / ‖H‖_F moves the Cholesky factor of the damped H⁻¹, and GPTQ's
        # pre-rounding values (codes, |x| <= 8) with it, by <~ κ(H)·ε (first order; measured 0.01-0.03 κε
        # with activations nudged by 1-512 ulps); the stored float32 scale adds 2 roundings of 8 codes: 2^-20.
        damped = H.clone()
        damped.diagonal().add_(config.damp * H.diagonal().mean())
        eigenvalues = torch.linalg.eigvalsh(damped)
        eps_h = float((H_other - H).norm() / H.norm())
        tie = float(eigenvalues[-1] / eigenvalues[0]) * eps_h + 2.0**-20 if tau is None else tau
        (q_r, scale_r, zero_r, w_hat_r), unexplained = _gptq_replay(W, H, config, q, tie, monkeypatch)
        # same codes, so the scales (max |column| / 7.5 in float32) differ by <= tie / 7.5 relative plus
        # one float32 rounding each, and Ŵ = code × scale by that plus one more rounding each
        s_rtol = tie + _EPS32
        out[name] = {
            "tau": tie,
            "hessian": float((H_other - H).norm() / (h_rtol * H.trace())),
            "unexplained": unexplained + int((zero != zero_r).sum()),
            "scale": float(((scale - scale_r).abs() / scale_r.abs()).max()) / s_rtol,
            "weight": float(((w_hat - w_hat_r).abs() / w_hat_r.abs().clamp(min=1e-30)).max())
            / (s_rtol + _EPS32),
        }
    return out


def _nudge_kernel_rounding(model: torch.nn.Module, ulps: int, seed: int) -> None:
    """Simulate kernels that round differently: the inputs of every ``o_proj`` (attention output) and
    ``down_proj`` (MLP) change by a random number of float32 ulps in ``[-ulps, ulps]``."""
    g = torch.Generator().manual_seed(seed)

    def nudge(_module: torch.nn.Module, args: tuple) -> tuple:
        k = torch.randint(-ulps, ulps + 1, args[0].shape, generator=g).to(args[0].dtype)
        return (args[0] * (1 + k * _EPS32), *args[1:])

    for name, module in model.named_modules():
        if name.endswith(("o_proj", "down_proj")):
            module.register_forward_pre_hook(nudge)


def test_padding_does_not_change_the_quantized_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(8))
    ones = torch.ones_like(ids)
    pad_ids = torch.zeros(2, 8, dtype=torch.long)
    garbage = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(9))
    mask = torch.cat([ones, torch.zeros_like(pad_ids)], 1)
    right_padded = [{"input_ids": torch.cat([ids, pad_ids], 1), "attention_mask": mask}]
    nudged = tiny_model()
    _nudge_kernel_rounding(nudged, ulps=4, seed=0)  # what another CPU's kernels may do on these shapes
    variants = {
        "right-padded": (tiny_model(), right_padded),
        "garbage under the mask": (
            tiny_model(),
            [{"input_ids": torch.cat([ids, garbage], 1), "attention_mask": mask}],
        ),
        "right-padded, kernels rounding differently": (nudged, right_padded),
        "pads not masked": (tiny_model(), [{"input_ids": torch.cat([ids, pad_ids], 1)}]),
    }
    # float64 solves in input order: this test isolates what padding does to the Hessians
    config = QuantizeConfig(bits=4, group_size=32, act_order=False, dtype="float64")
    _, plain = _gptq_calls(tiny_model(), [{"input_ids": ids}], config, monkeypatch)
    runs = {k: _gptq_calls(m, b, config, monkeypatch, replace=plain) for k, (m, b) in variants.items()}
    # H = 2/N Σ_t x_t x_tᵀ over the N real tokens: if every token's activations obey ‖δx_t‖ <= ρ‖x_t‖,
    # ‖δH‖_F <= 2/N Σ_t (2ρ + ρ²)‖x_t‖² = (2ρ + ρ²) tr(H). ρ: float32 forward error (γ_n ≈ n·u, n <= 128
    # terms, u = 2^-24) of the <= 9 reductions per layer (2 norms, q/k/v, QKᵀ, softmax, PV, o, gate/up,
    # down) over the 2 layers of a tiny well-conditioned model: ρ = 2 · 9 · 128 · 2^-24 ≈ 1.4e-4.
    model_config = tiny_qwen2_config(**TINY)
    n = max(model_config.hidden_size, model_config.intermediate_size, right_padded[0]["input_ids"].shape[1])
    rho = model_config.num_hidden_layers * 9 * n * _EPS32 / 2
    h_rtol = 2 * rho + rho**2
    tau = 0.0
    for key in ("right-padded", "garbage under the mask", "right-padded, kernels rounding differently"):
        report, calls = runs[key]
        assert [r.tokens for r in report.layers] == [48] * 14, key
        for name, diff in _gptq_differences(plain, calls, config, h_rtol, monkeypatch).items():
            assert diff["unexplained"] == 0, (key, name, diff)
            assert max(diff["hessian"], diff["scale"], diff["weight"]) <= 1, (key, name, diff)
            tau = max(tau, diff["tau"])
    # counting the pads as tokens changes every Hessian by > 100x the tolerance (layer 0's q/k/v only by
    # the factor 48/64: the pad embedding is zero; GPTQ ignores a scaled H) and, replayed with the ties
    # of the masked runs, leaves thousands of codes unexplained
    report, unmasked = runs["pads not masked"]
    assert report.layers[0].tokens == 64
    diffs = _gptq_differences(plain, unmasked, config, h_rtol, monkeypatch, tau=tau)
    assert min(d["hessian"] for d in diffs.values()) > 100, diffs
    assert sum(d["unexplained"] for d in diffs.values()) > 1000, diffs


# ----------------------------------------------------------------------------- 7. shared Hessians, float32


def _record_rounding_margin(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Patch ``_round`` to record the smallest distance (in codes) of a pre-rounding value to a
    rounding boundary; returns the list it appends to."""
    margins: list[float] = []
    nearest = quantize_module._round

    def spy(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
        x = (w / scale + zero).double()
        margins.append(float(((x - x.floor() - 0.5).abs()).min()))
        return nearest(w, scale, zero, bits)

    monkeypatch.setattr(quantize_module, "_round", spy)
    return margins


def test_linears_reading_one_input_share_one_hessian_and_one_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    """q/k/v (and gate/up) read the same tensor: one Hessian and one stacked GPTQ call per group, whose
    codes are those of separate calls (GPTQ treats rows independently)."""
    calls: dict = {}
    gptq = quantize_module.gptq_quantize_weight

    def spy(W: torch.Tensor, H: torch.Tensor, config: QuantizeConfig, name: str = "weight") -> tuple:
        calls[name] = (W.clone(), H.clone())
        return gptq(W, H, config, name=name)

    config = QuantizeConfig(bits=4, group_size=32, dtype="float64")
    with monkeypatch.context() as m:
        m.setattr(quantize_module, "gptq_quantize_weight", spy)
        report = quantize_model(tiny_model(), calibration(), config)
    assert list(calls)[:4] == [
        "model.layers.0.self_attn.{q_proj,k_proj,v_proj}",
        "model.layers.0.self_attn.o_proj",
        "model.layers.0.mlp.{gate_proj,up_proj}",
        "model.layers.0.mlp.down_proj",
    ]
    assert len(calls) == 8 and len(report.layers) == 14
    W, H = calls["model.layers.0.self_attn.{q_proj,k_proj,v_proj}"]
    assert W.shape == (64 + 32 + 32, 64)  # q: 4 heads x 16, k and v: 2 KV heads x 16
    # the shared Hessian is the one of q_proj's own input: 2/N XᵀX over the layer's input norm output
    model, seen = tiny_model(), []
    model.model.layers[0].self_attn.q_proj.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    for batch in calibration():
        logits(model, batch["input_ids"])
    X = torch.cat([x.reshape(-1, 64) for x in seen]).double()
    expected = 2 * X.T @ X / X.shape[0]
    # float64 sums of <= 384 float32 products: relative error <= 384 * 2^-53 per entry, far below 1e-12
    torch.testing.assert_close(H, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    # stacked = separate: float64 solves of the same rows differ by ~1e-13 codes; the margin check makes
    # equal codes sound (no pre-rounding value of the separate solves lies that close to a boundary)
    margins = _record_rounding_margin(monkeypatch)
    row = 0
    for proj in ("q_proj", "k_proj", "v_proj"):
        name = f"model.layers.0.self_attn.{proj}"
        n = model.get_submodule(name).out_features
        q = gptq(W[row : row + n], H, config, name=name)[0]
        assert torch.equal(q, report.quantized[name].q), name
        row += n
    assert min(margins) > 1e-9, min(margins)


def test_float32_solve_matches_float64_up_to_rounding_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default float32 GPTQ gives the float64 codes except at rounding ties of its own precision:
    replayed in float64 following float32's choice wherever a pre-rounding value lies within tau codes of
    a boundary, no code is left unexplained; tau = κ(damped H) · n · 2^-24 · 8 (backward-stable Cholesky
    solves in float32, n columns, codes of magnitude <= 8)."""
    X = correlated_inputs(512, 64, seed=6, rank=48)
    H = 2 * X.T @ X / X.shape[0]
    W = torch.randn(32, 64, generator=torch.Generator().manual_seed(7))
    config32 = QuantizeConfig(bits=4, group_size=16, act_order=False)
    config64 = QuantizeConfig(bits=4, group_size=16, act_order=False, dtype="float64")
    q32 = gptq_quantize_weight(W, H.float(), config32)[0]
    damped = H.clone()
    damped.diagonal().add_(config64.damp * H.diagonal().mean())
    eigenvalues = torch.linalg.eigvalsh(damped)
    tau = float(eigenvalues[-1] / eigenvalues[0]) * 64 * 2.0**-24 * 8
    assert tau < 0.05, tau  # a meaningful test: ties are a small band of the [0, 1) code interval
    (q64, *_), unexplained = _gptq_replay(W, H, config64, q32, tau, monkeypatch)
    assert unexplained == 0
    assert float((q64 != q32).double().mean()) <= 0.05


def test_a_linear_the_layer_never_calls_is_rounded_and_reported_with_no_tokens() -> None:
    model, original = tiny_model(), torch.nn.Linear(64, 64)
    model.model.layers[0].mlp.extra = original
    weight = original.weight.detach().clone()
    report = quantize_model(model, calibration(1), QuantizeConfig(bits=4, group_size=32))
    (extra,) = [r for r in report.layers if r.name.endswith("extra")]
    assert extra.tokens == 0 and extra.error == 0.0  # a zero Hessian: no output error to measure
    # GPTQ on a zero Hessian is round-to-nearest (no feedback), up to float32 ties: its w / scale is a
    # float32 quotient (|w / scale| <= 8, so off by <= 8 * 2^-24 codes), round-to-nearest's a float64 one
    q, scale, _ = quantize_weight(weight, 4, 32, True)
    record = report.quantized["model.layers.0.mlp.extra"]
    assert torch.equal(record.scale, scale)
    x = weight.double() / scale.double().repeat_interleave(32, dim=1)
    tie = (x - x.floor() - 0.5).abs() <= 2.0**-20
    differs = record.q != q
    assert not (differs & ~tie).any() and int((record.q.int() - q.int()).abs().max()) <= 1
    assert all(r.tokens == 4 * 32 for r in report.layers if r is not extra)
