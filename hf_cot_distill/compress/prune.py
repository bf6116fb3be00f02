"""Structured pruning of Qwen2 / Llama-style causal LMs: MLP channels, query heads and whole KV groups.

Layer-wise reconstruction, in the spirit of OBS / SparseGPT / FLAP, applied to whole structures:

* Decoder layers are processed in order; layer ``l`` is calibrated on the outputs of the already pruned
  layers ``0..l-1`` (layer inputs are cached once per calibration batch, then pushed through each layer).
* Inside a layer the attention is pruned first, then the MLP (which then sees the pruned attention).
* For an output projection ``W`` (``o_proj`` or ``down_proj``, shape ``out x F``) a forward pre-hook
  accumulates the Gram matrix ``G = X^T X`` (``F x F``, float64) of its input ``X`` (``n x F``) over the
  non-pad tokens. Removing a channel / head / KV group removes a block of ``F`` columns; the block's other
  weights (``gate/up`` rows, ``q/k/v`` rows) only feed those columns, so the layer's output error is
  exactly ``||X W^T - X_S V^T||^2`` with ``S`` the kept columns and ``V`` the new ``W``.
* ``criterion="reconstruction"`` chooses the blocks by greedy backward elimination of that error: with
  ``refit`` the block-OBS cost ``tr(W_B [H^-1]_BB^-1 W_B^T)`` (``H = G + lambda I``, removal compensated
  on the kept columns, as the refit will do), without ``refit`` the exact increase of
  ``||X_R W_R^T||^2`` (``R`` the removed columns). ``criterion="magnitude"`` ranks blocks by
  ``||W_B||_F^2`` (weight-norm baseline).
* ``refit`` then solves ``V = argmin ||X W^T - X_S V^T||^2 + lambda ||V - W_S||^2``, i.e.
  ``V = (W G[:, S] + lambda W_S)(G_SS + lambda I)^-1``, ``lambda = ridge * mean(diag G)`` (damped towards
  the old weights, so keeping everything is an exact no-op).

The result is a plain transformers model with smaller uniform sizes in its config (``intermediate_size``,
``num_attention_heads``, ``num_key_value_heads``, explicit ``head_dim``); which units are kept is chosen
per layer. Query heads stay group-major so ``repeat_kv`` pairs them with their KV heads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from hf_cot_distill.compress._calibration import read_calibration
from hf_cot_distill.core.validation import check_bool, check_choice, check_float, check_int
from hf_cot_distill.models.decoder import LayerInputs, decoder_layers

CRITERIA = ("reconstruction", "magnitude")
_MLP_ROUNDS = 32  # greedy rounds for MLP channels: each removes ~1/32 of the channels to remove
_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_LINEARS += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass
class PruneConfig:
    """What to keep and how to choose it (see the module docstring)."""

    mlp_keep_ratio: float = 0.5  # share of MLP intermediate channels kept in every layer, in (0, 1]
    kv_heads_keep: int | None = None  # KV heads (whole groups) kept per layer; None = all
    q_heads_per_kv_keep: int | None = None  # query heads kept in every kept KV group; None = all
    criterion: str = "reconstruction"  # "reconstruction" | "magnitude"
    refit: bool = True  # least-squares re-solve of o_proj / down_proj on the kept inputs
    ridge: float = 1e-3  # damping, relative to mean(diag G)

    def __post_init__(self) -> None:
        check_float(
            "PruneConfig.mlp_keep_ratio",
            self.mlp_keep_ratio,
            minimum=0.0,
            maximum=1.0,
            min_open=True,
            fix="e.g. 0.5 to keep half the channels",
        )
        for name in ("kv_heads_keep", "q_heads_per_kv_keep"):
            if getattr(self, name) is not None:  # None: keep all
                value = check_int(
                    f"PruneConfig.{name}",
                    getattr(self, name),
                    minimum=1,
                    fix="pass an int >= 1, or None to keep all",
                )
                setattr(self, name, value)
        check_choice("PruneConfig.criterion", self.criterion, CRITERIA)
        self.refit = check_bool("PruneConfig.refit", self.refit)
        check_float(
            "PruneConfig.ridge",
            self.ridge,
            minimum=0.0,
            min_open=True,
            fix="use a finite number > 0 (1e-3 is a good default)",
        )


@dataclass
class LayerPruneReport:
    """Kept original indices (ascending) and relative output errors ``||X W^T - X_S V^T||^2 / ||X W^T||^2``
    of one layer on its calibration input (``*_no_refit``: same kept set with ``V = W_S``)."""

    layer: int
    mlp_kept: list[int]
    q_heads_kept: list[int]
    kv_heads_kept: list[int]
    mlp_rel_error: float = 0.0
    mlp_rel_error_no_refit: float = 0.0
    attn_rel_error: float = 0.0
    attn_rel_error_no_refit: float = 0.0


@dataclass
class PruneReport:
    """What ``prune_model`` did; ``to_dict()`` is JSON-serialisable."""

    settings: dict[str, Any]
    model_type: str
    sizes_before: dict[str, int]
    sizes_after: dict[str, int]
    params_before: int
    params_after: int
    calibration_tokens: int
    layers: list[LayerPruneReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PrunePlan:
    """Original per-layer sizes and the target counts."""

    head_dim: int
    n_heads: int
    n_kv: int
    inter: int
    kv_keep: int
    q_keep: int
    mlp_keep: int

    @property
    def q_per_kv(self) -> int:
        return self.n_heads // self.n_kv

    def sizes(self, after: bool) -> dict[str, int]:
        heads = self.kv_keep * self.q_keep if after else self.n_heads
        kv, inter = (self.kv_keep, self.mlp_keep) if after else (self.n_kv, self.inter)
        keys = ("intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
        return dict(zip(keys, (inter, heads, kv, self.head_dim)))


def prune_model(
    model: nn.Module, calibration: Iterable[dict[str, torch.Tensor]], config: PruneConfig
) -> PruneReport:
    """Prune ``model`` in place (its Linear layers and config shrink; no masks) and report what was kept.

    ``calibration``: batches ``{"input_ids": LongTensor[B, T], "attention_mask": LongTensor[B, T]}``
    (mask optional; positions with mask 0 count in no statistic). Raises ``ValueError`` for an unsupported
    architecture, keep counts out of range, calibration without a non-pad token, or non-finite statistics
    (the model may then be partly pruned: prune a copy if you need the original back).
    """
    layers = prunable_layers(model)
    plan = make_plan(layers, config)
    batches = read_calibration(calibration, next(model.parameters()).device)
    model_type = str(getattr(model.config, "model_type", type(model).__name__))
    tokens = sum(int(m.sum()) for _, _, m in batches)
    report = PruneReport(
        asdict(config), model_type, plan.sizes(False), plan.sizes(True), _n_params(model), 0, tokens
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            calib = LayerInputs(model, layers, batches)
            for i, layer in enumerate(layers):
                report.layers.append(_prune_layer(calib, i, layer, plan, config))
                if i + 1 < len(layers):
                    calib.advance()
    finally:
        model.train(was_training)
    for key, value in plan.sizes(True).items():
        setattr(model.config, key, value)
    report.params_after = _n_params(model)
    return report


def _prune_layer(
    calib: LayerInputs, index: int, layer: nn.Module, plan: PrunePlan, config: PruneConfig
) -> LayerPruneReport:
    """Attention first, then the MLP (calibrated on the pruned attention's output)."""
    rep = LayerPruneReport(index, list(range(plan.inter)), list(range(plan.n_heads)), list(range(plan.n_kv)))
    if plan.kv_keep < plan.n_kv or plan.q_keep < plan.q_per_kv:
        gram = _gram(calib, layer.self_attn.o_proj, f"layer {index} self_attn.o_proj")
        _prune_attention(layer.self_attn, gram, plan, config, rep)
    if plan.mlp_keep < plan.inter:
        gram = _gram(calib, layer.mlp.down_proj, f"layer {index} mlp.down_proj")
        _prune_mlp(layer.mlp, gram, plan, config, rep)
    return rep


def refit_weight(weight: torch.Tensor, gram: torch.Tensor, keep: torch.Tensor, ridge: float) -> torch.Tensor:
    """Ridge least-squares output projection on the kept input columns.

    ``weight``: ``out x F``; ``gram``: ``F x F`` (``X^T X``); ``keep``: ``(k,)`` column ids. Returns the float64
    ``out x k`` matrix ``V = argmin ||X W^T - X_S V^T||^2 + lambda ||V - W_S||^2``, ``lambda = ridge mean(diag G)``.
    """
    w, g = weight.detach().double(), gram.double()
    lam = _damping(g, ridge)
    h = g[keep][:, keep] + lam * torch.eye(len(keep), dtype=g.dtype, device=g.device)
    rhs = w @ g[:, keep] + lam * w[:, keep]
    return torch.linalg.solve(h, rhs.T).T


def relative_error(weight: torch.Tensor, gram: torch.Tensor, keep: torch.Tensor, new: torch.Tensor) -> float:
    """``||X W^T - X_S V^T||^2 / ||X W^T||^2`` from the Gram matrix (``weight`` ``out x F``, ``new`` ``out x k``)."""
    w, g = weight.detach().double(), gram.double()
    diff = w.clone()
    diff[:, keep] -= new.double()
    target = float(((w @ g) * w).sum())
    return float(((diff @ g) * diff).sum()) / target if target > 0 else 0.0


def _damping(gram: torch.Tensor, ridge: float) -> float:
    mean = float(gram.diagonal().mean())
    return ridge * (mean if mean > 0 else 1.0)


class _Eliminator:
    """Greedy backward elimination of equal-size contiguous column blocks of ``W`` (``out x F``) given ``G``.

    ``cols`` holds the original ids of the remaining columns (ascending); blocks are counted on them."""

    def __init__(self, weight: torch.Tensor, gram: torch.Tensor, config: PruneConfig) -> None:
        self.w = weight.detach().double()
        self.cols = torch.arange(self.w.shape[1], device=self.w.device)
        self.mode = "magnitude" if config.criterion == "magnitude" else "obs" if config.refit else "plain"
        if self.mode == "obs":  # inverse damped Gram, updated by Schur complements on removal
            eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
            # cholesky_solve against I, not torch.cholesky_inverse: the latter is ~12x slower on CPU
            # (10 s vs 0.8 s for 1,536 x 1,536 float64 on 2 threads).
            chol = torch.linalg.cholesky(gram + _damping(gram, config.ridge) * eye)
            self.h = torch.cholesky_solve(eye, chol)
        elif self.mode == "plain":  # M = (W^T W) o G: error of removing R is 1_R^T M 1_R
            self.h = (self.w.T @ self.w) * gram
            self.cross = torch.zeros_like(self.cols, dtype=self.h.dtype)

    def costs(self, block: int) -> torch.Tensor:
        """Error added by removing each remaining block of ``block`` columns; shape ``(F_cur / block,)``."""
        units = self.w.shape[1] // block
        if self.mode == "magnitude":
            return (self.w**2).sum(0).view(units, block).sum(1)
        diag = self.h.reshape(units, block, units, block).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
        if self.mode == "plain":
            return diag.sum((1, 2)) + 2 * self.cross.view(units, block).sum(1)
        if block == 1:
            return (self.w**2).sum(0) / self.h.diagonal()
        wb = self.w.reshape(-1, units, block).permute(1, 2, 0)  # units x block x out
        # The diagonal blocks of an SPD inverse are SPD: Cholesky. (Batched LU solves on CPU fail
        # inside MKL for some real inputs with 2 threads: "Pivots given to lu_solve ..." on SmolLM2.)
        return (wb * torch.cholesky_solve(wb, torch.linalg.cholesky(diag))).sum((1, 2))

    def remove(self, units: torch.Tensor, block: int) -> None:
        """Drop blocks ``units`` (ids among the remaining blocks), compensating ``W`` in OBS mode."""
        drop = (units[:, None] * block + torch.arange(block, device=units.device)).flatten()
        kept = torch.ones(self.w.shape[1], dtype=torch.bool, device=drop.device)
        kept[drop] = False
        s = kept.nonzero().squeeze(1)
        if self.mode == "obs":
            a = torch.cholesky_solve(self.h[drop][:, s], torch.linalg.cholesky(self.h[drop][:, drop]))
            self.w = self.w[:, s].addmm_(self.w[:, drop], a, alpha=-1)
            self.h = self.h[s][:, s].addmm_(self.h[s][:, drop], a, alpha=-1)
        else:
            self.w = self.w[:, s]
            if self.mode == "plain":
                self.cross = self.cross[s] + self.h[s][:, drop].sum(1)
                self.h = self.h[s][:, s]
        self.cols = self.cols[s]


def _prune_attention(
    attn: nn.Module, gram: torch.Tensor, plan: PrunePlan, config: PruneConfig, rep: LayerPruneReport
) -> None:
    """Choose KV groups, then the same number of query heads in every kept group; shrink q/k/v/o."""
    d, group = plan.head_dim, plan.q_per_kv * plan.head_dim
    elim = _Eliminator(attn.o_proj.weight, gram, config)
    for _ in range(plan.n_kv - plan.kv_keep):
        elim.remove(elim.costs(group).argmin().view(1), group)
    for q in range(plan.q_per_kv, plan.q_keep, -1):
        costs = elim.costs(d).view(plan.kv_keep, q)
        elim.remove(costs.argmin(1) + q * torch.arange(plan.kv_keep, device=costs.device), d)
    keep = elim.cols
    heads = keep[::d] // d
    kv = torch.unique(heads // plan.q_per_kv)
    new, rep.attn_rel_error, rep.attn_rel_error_no_refit = _solve(attn.o_proj.weight, gram, keep, config)
    rep.q_heads_kept, rep.kv_heads_kept = heads.tolist(), kv.tolist()
    _keep_rows(attn.q_proj, keep)
    kv_rows = (kv[:, None] * d + torch.arange(d, device=kv.device)).flatten()
    _keep_rows(attn.k_proj, kv_rows)
    _keep_rows(attn.v_proj, kv_rows)
    _set_weight(attn.o_proj, new)
    attn.num_key_value_groups = plan.q_keep
    for name, value in {
        "num_heads": len(heads),
        "num_attention_heads": len(heads),
        "num_key_value_heads": len(kv),
    }.items():
        if hasattr(attn, name):  # not cached by Qwen2 / Llama in transformers 5, but by some variants
            setattr(attn, name, value)


def _prune_mlp(
    mlp: nn.Module, gram: torch.Tensor, plan: PrunePlan, config: PruneConfig, rep: LayerPruneReport
) -> None:
    """Choose ``plan.mlp_keep`` intermediate channels; shrink gate/up rows and down_proj columns."""
    elim = _Eliminator(mlp.down_proj.weight, gram, config)
    total = plan.inter - plan.mlp_keep
    chunk = total if elim.mode == "magnitude" else math.ceil(total / _MLP_ROUNDS)
    while (left := len(elim.cols) - plan.mlp_keep) > 0:
        costs = elim.costs(1)
        elim.remove(torch.topk(costs, min(chunk, left), largest=False).indices, 1)
    keep = elim.cols
    new, rep.mlp_rel_error, rep.mlp_rel_error_no_refit = _solve(mlp.down_proj.weight, gram, keep, config)
    rep.mlp_kept = keep.tolist()
    _keep_rows(mlp.gate_proj, keep)
    _keep_rows(mlp.up_proj, keep)
    _set_weight(mlp.down_proj, new)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def _solve(
    weight: torch.Tensor, gram: torch.Tensor, keep: torch.Tensor, config: PruneConfig
) -> tuple[torch.Tensor, float, float]:
    """New output projection (``out x k``) and its relative errors with / without the refit."""
    plain = weight.detach().double()[:, keep]
    new = refit_weight(weight, gram, keep, config.ridge) if config.refit else plain
    return new, relative_error(weight, gram, keep, new), relative_error(weight, gram, keep, plain)


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    """Keep output rows ``rows`` of ``linear`` (weight and bias)."""
    bias = linear.bias
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach()[rows].clone(), requires_grad=bias.requires_grad)
    _set_weight(linear, linear.weight.detach()[rows])


def _set_weight(linear: nn.Linear, weight: torch.Tensor) -> None:
    """Replace the weight (``out x in``, cast to the old dtype) and the cached feature counts."""
    old = linear.weight
    linear.weight = nn.Parameter(weight.to(old.dtype).contiguous().clone(), requires_grad=old.requires_grad)
    linear.out_features, linear.in_features = linear.weight.shape


def prunable_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers (``decoder_layers``) after checking every one has the projections this module edits."""
    name = type(model).__name__
    layers = decoder_layers(model)[1]
    if not hasattr(model, "config"):
        raise ValueError(f"unsupported architecture {name}: needs a Qwen2/Llama-style model with a config")
    for i, layer in enumerate(layers):
        for path in _LINEARS + ("self_attn.head_dim", "self_attn.num_key_value_groups"):
            found: Any = layer
            for part in path.split("."):
                found = getattr(found, part, None)
            if found is None or (path in _LINEARS and not isinstance(found, nn.Linear)):
                raise ValueError(
                    f"unsupported architecture {name}: layer {i} has no {path} (prune_model needs "
                    "q/k/v/o_proj Linear attention with head_dim and a gate/up/down_proj MLP)"
                )
    return layers


def make_plan(layers: nn.ModuleList, config: PruneConfig) -> PrunePlan:
    """Original sizes (uniform over layers) and target counts, checking the keep counts fit the model."""
    shapes = set()
    for layer in layers:
        attn, d = layer.self_attn, int(layer.self_attn.head_dim)
        shapes.add(
            (d, attn.q_proj.out_features // d, attn.k_proj.out_features // d, layer.mlp.down_proj.in_features)
        )
    if len(shapes) != 1:
        raise ValueError(f"layers have different sizes {sorted(shapes)}; prune_model needs uniform layers")
    d, n_heads, n_kv, inter = shapes.pop()
    if n_kv < 1 or n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads do not split into {n_kv} KV groups")
    kv_keep = n_kv if config.kv_heads_keep is None else config.kv_heads_keep
    q_keep = n_heads // n_kv if config.q_heads_per_kv_keep is None else config.q_heads_per_kv_keep
    for name, keep, have, what in (
        ("kv_heads_keep", kv_keep, n_kv, "KV heads per layer"),
        ("q_heads_per_kv_keep", q_keep, n_heads // n_kv, "query heads per KV group"),
    ):
        if keep > have:
            raise ValueError(
                f"PruneConfig.{name}={keep} is out of range: the model has {have} {what}; use 1..{have} or None"
            )
    mlp_keep = max(1, math.floor(config.mlp_keep_ratio * inter + 0.5))
    return PrunePlan(d, n_heads, n_kv, inter, kv_keep, q_keep, mlp_keep)


def _gram(calib: LayerInputs, target: nn.Linear, where: str) -> torch.Tensor:
    """Float64 ``F x F`` Gram matrix of ``target``'s input over the non-pad tokens of every batch, from one
    replay of the current layer."""
    gram = torch.zeros(
        target.in_features, target.in_features, dtype=torch.float64, device=target.weight.device
    )

    def accumulate(module: nn.Module, args: tuple) -> None:
        x = args[0][calib.mask].double()  # n x F over the non-pad tokens
        gram.addmm_(x.T, x)

    handle = target.register_forward_pre_hook(accumulate)
    try:
        calib.replay()
    finally:
        handle.remove()
    if not torch.isfinite(gram).all():
        raise ValueError(
            f"non-finite (NaN/inf) calibration statistics at {where}: check the weights and inputs"
        )
    return gram


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
