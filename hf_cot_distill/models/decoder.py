"""The decoder block list of a causal LM, and its layer inputs recorded once and replayed layer by layer.

One lookup (``decoder_layers``) for layer dropping, pruning and quantization, and one recorder
(``LayerInputs``) for the two layer-wise calibrations (pruning, quantization).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The dotted module path (``"model.layers"``) and the ``nn.ModuleList`` of ``model``'s decoder blocks.

    The blocks are ``model.get_decoder().layers`` (Llama, Qwen2, Mistral, SmolLM2, ...); the path is
    the name under which ``model.named_modules()`` reaches that very list, so
    ``model.get_submodule(path) is layers``. Raises ``ValueError`` naming the model class when there
    is no such non-empty list inside the model.
    """
    name = type(model).__name__
    get_decoder = getattr(model, "get_decoder", None)
    layers = getattr(get_decoder() if callable(get_decoder) else None, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) > 0:
        for path, module in model.named_modules():
            if module is layers:
                return path, layers
    raise ValueError(
        f"unsupported architecture {name}: no decoder layers with nn.Linear modules found (needs a "
        "non-empty nn.ModuleList at get_decoder().layers, inside the model); fix: use a decoder-only "
        "*ForCausalLM that keeps its blocks in one ModuleList, such as Llama, Qwen2 or Mistral"
    )


class _StopForward(Exception):
    """Raised by the recording pre-hook of the last layer: the rest of the forward is not needed."""


def _pass_through(hidden_states: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
    """A decoder layer's stand-in while recording: its input hidden states, unchanged."""
    return kwargs["hidden_states"] if hidden_states is None else hidden_states


class LayerInputs:
    """The inputs of every decoder layer on calibration batches, replayed one layer at a time.

    Recording runs ``model(input_ids=ids, attention_mask=attn, use_cache=False)`` on every batch
    ``(ids, attn or None, token mask)`` with a forward pre-hook on every layer and stops at the last
    layer's hook (before the last layer, final norm and head run). Kept: the hidden states entering
    layer 0 (``hidden``, one ``[B, T, H]`` per batch) and, for every layer, its other call arguments
    (``calls[i]``: attention mask, rotary position embeddings, position ids, ...). They are kept per
    layer because they can differ: sliding-window layers get their own attention mask.

    ``replay()`` runs the current layer (``index``, starting at 0) on ``hidden`` and returns its
    outputs; ``advance()`` replaces ``hidden`` by them and moves to the next layer. So layer ``i`` is
    replayed on the outputs of layers ``0..i-1`` as they were when advanced past (already pruned /
    quantized). While a batch is replayed, ``mask`` is its token mask (bool ``[B, T]``, False on pad)
    for hooks that gather statistics over the non-pad tokens.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: nn.ModuleList,
        batches: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]],
    ) -> None:
        self.layers = layers
        self.index = 0
        self.masks = [mask for _, _, mask in batches]
        self.mask: torch.Tensor | None = None
        self.hidden: list[torch.Tensor] = []
        self.calls: list[list[tuple[tuple[Any, ...], dict[str, Any]]]] = [[] for _ in layers]
        handles = [
            layer.register_forward_pre_hook(self._recorder(i), with_kwargs=True)
            for i, layer in enumerate(layers)
        ]
        # Layers 1..L-2 are only passed through while recording: their call arguments (masks, rotary
        # embeddings, positions) are computed before the layer loop, and replay() recomputes every
        # hidden state from layer 0's input, so running them would be a wasted forward. Layer 0 runs
        # for real, which fixes the output type the model's loop expects (a tensor or a tuple).
        skipped = list(layers)[1:-1]
        own = {id(layer): layer.__dict__["forward"] for layer in skipped if "forward" in layer.__dict__}
        try:
            for ids, attn, _ in batches:
                for layer in skipped:
                    layer.forward = _pass_through
                try:
                    model(input_ids=ids, attention_mask=attn, use_cache=False)
                except _StopForward:
                    pass
        finally:
            for handle in handles:
                handle.remove()
            for layer in skipped:  # back to what it was: the class's forward, or a wrapper (accelerate hooks)
                if id(layer) in own:
                    layer.forward = own[id(layer)]
                else:
                    layer.__dict__.pop("forward", None)
        for i, calls in enumerate(self.calls):
            if len(calls) != len(batches):
                raise ValueError(
                    f"{type(model).__name__}: its forward called decoder layer {i} {len(calls)} times on "
                    f"{len(batches)} calibration batches; the layer inputs cannot be replayed"
                )

    def _recorder(self, index: int) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
        last = index == len(self.layers) - 1

        def record(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            kwargs = dict(kwargs)
            hidden, rest = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
            if index == 0:
                self.hidden.append(hidden.detach())
            self.calls[index].append((rest, kwargs))
            if last:
                raise _StopForward

        return record

    def replay(self) -> list[torch.Tensor]:
        """The current layer's outputs (hidden states ``[B, T, H]``), one per batch."""
        layer, outputs = self.layers[self.index], []
        try:
            for hidden, (args, kwargs), mask in zip(self.hidden, self.calls[self.index], self.masks):
                self.mask = mask
                out = layer(hidden, *args, **kwargs)
                outputs.append(out[0] if isinstance(out, (tuple, list)) else out)
        finally:
            self.mask = None
        return outputs

    def advance(self) -> None:
        """Replace the inputs by the current layer's outputs and move to the next layer."""
        self.hidden = self.replay()
        self.index += 1
