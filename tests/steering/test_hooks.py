"""Hook steering: every position or from a start position, tensor or tuple block outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from caa_bake.core.errors import CaaBakeError
from caa_bake.steering.hooks import add_to_block_outputs, steering
from caa_bake.steering.vector import SteeringVector

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 64, 128, 11]])


@pytest.fixture(scope="module")
def llama(tiny_models: dict[str, Path]) -> Any:
    return AutoModelForCausalLM.from_pretrained(str(tiny_models["llama"])).eval()


def _vector(seed: int = 0) -> torch.Tensor:
    return torch.randn(32, generator=torch.Generator().manual_seed(seed))


def _hidden(model: Any, ids: torch.Tensor = IDS) -> list[torch.Tensor]:
    """The residual stream entering each block and the final norm: ``[input, out_0, ...]``.

    Read with pre-hooks on the *next* module (transformers records ``hidden_states`` with
    its own hooks, before ours run, so those would not show the steering).
    """
    blocks = model.model.layers
    seen: list[torch.Tensor] = []

    def grab(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0].detach().clone())

    handles = [b.register_forward_pre_hook(grab) for b in blocks]
    handles.append(model.model.norm.register_forward_pre_hook(grab))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_adds_the_vector_to_the_block_output_at_every_position(llama: Any) -> None:
    plain = _hidden(llama)
    v = _vector()
    with add_to_block_outputs(llama, {1: v}):
        steered = _hidden(llama)
    assert torch.equal(steered[1], plain[1])  # block 0 untouched
    assert torch.equal(steered[2], plain[2] + v)  # entry L + 1 = block L's output
    assert not torch.equal(steered[3], plain[3])


def test_start_position_leaves_earlier_positions_untouched(llama: Any) -> None:
    plain = _hidden(llama)
    v = _vector()
    with add_to_block_outputs(llama, {1: v}, start=6):
        steered = _hidden(llama)
    assert torch.equal(steered[2][:, :6], plain[2][:, :6])
    assert torch.equal(steered[2][:, 6:], plain[2][:, 6:] + v)
    assert torch.equal(steered[4][:, :6], plain[4][:, :6])  # causal: nothing leaks back
    assert not torch.equal(steered[4][:, 6:], plain[4][:, 6:])


def test_hooks_are_removed_on_exit_and_on_error(llama: Any) -> None:
    with torch.no_grad():
        before = llama(IDS).logits
    with add_to_block_outputs(llama, {0: _vector(), 3: _vector(1)}):
        pass
    with pytest.raises(RuntimeError, match="boom"), add_to_block_outputs(llama, {2: _vector()}):
        raise RuntimeError("boom")
    with torch.no_grad():
        assert torch.equal(llama(IDS).logits, before)


def test_start_position_holds_during_cached_generation(llama: Any) -> None:
    """generate() with a KV cache steers new tokens by absolute position, like a full re-run."""
    v = _vector() * 4
    with torch.no_grad(), add_to_block_outputs(llama, {1: v}, start=6):
        cached = llama.generate(
            IDS, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0
        )[0, IDS.shape[1] :]
        seq = IDS[0].tolist()
        for _ in range(6):
            seq.append(int(llama(torch.tensor([seq]), use_cache=False).logits[0, -1].argmax()))
    assert cached.tolist() == seq[IDS.shape[1] :]


def test_steering_vector_helper_scales_every_layer(llama: Any) -> None:
    vec = SteeringVector({0: _vector(), 2: _vector(1)})
    plain = _hidden(llama)
    with steering(llama, vec, -2.0):
        steered = _hidden(llama)
    assert torch.equal(steered[1], plain[1] + vec[0] * -2.0)


class _TupleBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.lin(x), None


class _Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_TupleBlock(), _TupleBlock()])


class _TupleModel(nn.Module):
    """Blocks returning tuples, as transformers < 4.54 decoder layers did."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _Inner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.model.layers:
            x = block(x)[0]
        return x


def test_tuple_block_outputs_are_steered() -> None:
    torch.manual_seed(0)
    model = _TupleModel()
    x = torch.randn(1, 3, 4)
    v = torch.tensor([1.0, -2.0, 0.5, 4.0])
    with torch.no_grad():
        expected = model.model.layers[1](model.model.layers[0](x)[0] + v)[0]
        with add_to_block_outputs(model, {0: v}):
            got = model(x)
    assert torch.equal(got, expected)


def test_bad_layers_and_shapes_are_refused(llama: Any) -> None:
    with (
        pytest.raises(CaaBakeError, match="layer 4 is out of range"),
        add_to_block_outputs(llama, {4: _vector()}),
    ):
        pass
    with (
        pytest.raises(CaaBakeError, match="must be 1-D"),
        add_to_block_outputs(llama, {0: torch.zeros(2, 32)}),
    ):
        pass
