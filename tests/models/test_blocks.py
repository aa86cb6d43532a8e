"""``caa_bake.models.blocks.decoder_blocks`` on real (tiny, random) transformers models."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, _config
from torch import nn
from transformers import AutoModelForCausalLM

from caa_bake.models.blocks import decoder_blocks

#: where each architecture keeps its decoder blocks
EXPECTED_PATH = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "granite": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "olmo2": "model.layers",
    "olmo3": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
}


def _tiny(arch: str) -> nn.Module:
    torch.manual_seed(0)
    cfg = _config(arch, 64, {})
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


def _at(module: nn.Module, dotted: str) -> object:
    obj: object = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_tiny_architecture_is_covered() -> None:
    assert set(EXPECTED_PATH) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", sorted(EXPECTED_PATH))
def test_blocks_are_the_models_own_layer_list(arch: str) -> None:
    model = _tiny(arch)
    blocks = decoder_blocks(model)
    assert blocks is _at(model, EXPECTED_PATH[arch])
    assert len(blocks) == 4


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "opt", "qwen2"])
def test_block_output_is_the_residual_stream_after_that_layer(arch: str) -> None:
    """Block L's output equals transformers' hidden_states[L + 1] (the last one is normed)."""
    model = _tiny(arch)
    seen: dict[int, torch.Tensor] = {}

    def keep(index: int):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            assert isinstance(hidden, torch.Tensor)
            seen[index] = hidden.detach().clone()

        return hook

    handles = [b.register_forward_hook(keep(i)) for i, b in enumerate(decoder_blocks(model))]
    ids = torch.tensor([[5, 9, 2, 17, 33, 8]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    for handle in handles:
        handle.remove()
    assert sorted(seen) == [0, 1, 2, 3]
    for layer in range(3):
        assert torch.allclose(seen[layer], out.hidden_states[layer + 1], atol=1e-6), layer


class _Wrapper(nn.Module):
    """A multimodal-style wrapper: ``model.language_model.layers``."""

    def __init__(self, layers: nn.ModuleList) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.language_model = nn.Module()
        self.model.language_model.layers = layers


def test_multimodal_wrapper_path() -> None:
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert decoder_blocks(_Wrapper(layers)) is layers


def test_empty_layer_list_is_skipped_for_a_later_path() -> None:
    layers = nn.ModuleList([nn.Linear(2, 2)])
    model = _Wrapper(layers)
    model.model.layers = nn.ModuleList()  # an empty list at the first path is not the answer
    assert decoder_blocks(model) is layers


def test_no_blocks_names_the_class() -> None:
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Module()
            self.model.layers = nn.Linear(2, 2)  # not a ModuleList

    with pytest.raises(TypeError, match="cannot find the decoder blocks of Encoder"):
        decoder_blocks(Encoder())
