"""The shared decoder lookup (``decoder_layers``) and layer-input recorder (``LayerInputs``) of
hf_cot_distill.models.decoder, on tiny Qwen2 / Llama models built locally."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2ForCausalLM

from hf_cot_distill.compress._calibration import read_calibration
from hf_cot_distill.models.decoder import LayerInputs, decoder_layers
from tests.tiny_models import tiny_llama, tiny_qwen2, tiny_qwen2_config


def sliding_qwen2() -> Qwen2ForCausalLM:
    """Tiny Qwen2 whose layer 1 is a sliding-window layer (window 4): its attention mask is not layer 0's."""
    config = tiny_qwen2_config()
    config.use_sliding_window, config.sliding_window, config.max_window_layers = True, 4, 1
    config.layer_types = ["full_attention", "sliding_attention"]
    torch.manual_seed(4)
    return Qwen2ForCausalLM(config)


def deep_sliding_qwen2() -> Qwen2ForCausalLM:
    """Tiny 4-layer Qwen2 whose middle layers (passed through while recording) are sliding-window
    layers: their own masks must still be recorded, and replay must recompute their outputs."""
    config = tiny_qwen2_config(num_hidden_layers=4)
    config.use_sliding_window, config.sliding_window, config.max_window_layers = True, 4, 1
    config.layer_types = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    torch.manual_seed(5)
    return Qwen2ForCausalLM(config)


MODELS = {
    "qwen2": lambda: tiny_qwen2(seed=1),
    "llama": lambda: tiny_llama(seed=2),
    "qwen2_sliding": sliding_qwen2,
    "qwen2_deep_sliding": deep_sliding_qwen2,
}


def n_linears(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in module.modules())


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_lookup_finds_the_decoder_layers(name: str) -> None:
    model = MODELS[name]()
    path, layers = decoder_layers(model)
    assert path == "model.layers"
    assert layers is model.model.layers and len(layers) == 2
    assert model.get_submodule(path) is layers


def test_lookup_ignores_a_bigger_module_list_of_linears() -> None:
    """The old quantize heuristic ("the ModuleList holding the most Linears") picked ``heads`` here."""
    model = tiny_qwen2()
    model.heads = nn.ModuleList([nn.Linear(32, 32) for _ in range(50)])
    assert n_linears(model.heads) > n_linears(model.model.layers)
    path, layers = decoder_layers(model)
    assert (path, layers) == ("model.layers", model.model.layers)


def test_lookup_without_decoder_layers_names_the_class() -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))  # blocks in .h
    empty = tiny_qwen2()
    empty.model.layers = nn.ModuleList()
    for model, name in ((nn.Sequential(nn.Embedding(10, 4)), "Sequential"), (gpt2, "GPT2LMHeadModel")):
        with pytest.raises(ValueError, match=f"unsupported architecture {name}: .*fix: use a decoder-only"):
            decoder_layers(model)
    with pytest.raises(ValueError, match="unsupported architecture Qwen2ForCausalLM"):
        decoder_layers(empty)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_replaying_the_recorded_inputs_gives_the_model_logits(name: str) -> None:
    """Layer by layer from the recorded layer-0 inputs, then final norm and lm_head, on a padded batch
    (with a sliding-window layer, whose mask is recorded for it, not reused from layer 0)."""
    model = MODELS[name]().eval()
    ids = torch.randint(3, 128, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    ids[mask == 0] = 0
    batches = read_calibration([{"input_ids": ids, "attention_mask": mask}] * 2, torch.device("cpu"))
    _, layers = decoder_layers(model)
    ran: list[str] = []
    hooks = [
        m.register_forward_hook(lambda *_, n=n: ran.append(n))
        for n, m in (("last", layers[-1]), ("norm", model.model.norm))
    ]
    with torch.no_grad():
        calib = LayerInputs(model, layers, batches)
        assert ran == []  # the recording stopped before the last layer
        for hook in hooks:
            hook.remove()
        torch.testing.assert_close(calib.hidden[0], model.model.embed_tokens(ids), atol=0, rtol=0)
        masks: list[torch.Tensor] = []
        seen = layers[0].mlp.register_forward_pre_hook(lambda *_: masks.append(calib.mask))
        for _ in layers:
            calib.advance()
        seen.remove()
        expected = model(input_ids=ids, attention_mask=mask).logits
        for hidden in calib.hidden:
            torch.testing.assert_close(model.lm_head(model.model.norm(hidden)), expected, atol=1e-5, rtol=0)
    assert len(masks) == 2 and all(m is b[2] for m, b in zip(masks, batches)) and calib.mask is None


def test_recording_passes_the_middle_layers_through_and_restores_them() -> None:
    """Only layer 0 runs while recording (the middle layers' forwards are stand-ins), and every
    layer's forward is its own again afterwards, a wrapper installed before included."""
    model = deep_sliding_qwen2().eval()
    _, layers = decoder_layers(model)
    wrapped = layers[2].forward
    layers[2].forward = lambda *a, **k: wrapped(*a, **k)  # e.g. an accelerate hook's wrapper
    wrapper = layers[2].forward
    ran: list[int] = []
    hooks = [layer.mlp.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, layer in enumerate(layers)]
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    batches = read_calibration(
        [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}], torch.device("cpu")
    )
    with torch.no_grad():
        calib = LayerInputs(model, layers, batches)
    assert ran == [0]  # layers 1 and 2 passed through (their MLPs never ran), layer 3 stopped at its pre-hook
    assert "forward" not in layers[1].__dict__ and layers[2].forward is wrapper
    sliding = calib.calls[1][0][1]["attention_mask"]
    full = calib.calls[0][0][1]["attention_mask"]
    assert sliding is not None and (full is None or not torch.equal(sliding, full))  # their own masks
    for hook in hooks:
        hook.remove()
