"""Per-pair activations kept by ``extract --keep-activations``, for ``caa-bake analyze pca``.

``vectors/<model-slug>/activations/<behavior>.safetensors`` holds one float32 tensor
``layer.<L>`` of shape ``[num_pairs, 2, hidden_size]`` per layer: the block output at the
answer-letter token (the extraction's position rule), ``[:, 0]`` on the matching side and
``[:, 1]`` on the non-matching side, pairs in dataset order. The metadata has the vector
file's provenance (model fingerprint, dataset sha256, dtype, ...) plus ``matching_letters``:
the matching answer's letter of each pair (``"ABBA..."``), so plots can expose letter bias.
The mean over pairs of ``[:, 0] - [:, 1]`` is the raw vector of that layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from caa_bake.core import CaaBakeError, atomic_file, vectors_dir
from caa_bake.data import ContrastPair

__all__ = ["ActivationSet", "activations_path", "answer_letter"]

_PREFIX = "layer."


def answer_letter(answer: str) -> str:
    """``"(A)"`` -> ``"A"``: the first letter or digit of an answer (``"?"`` if none)."""
    for ch in answer.strip():
        if ch.isalnum():
            return ch
    return "?"


def activations_path(model_slug: str, behavior: str) -> Path:
    """``vectors/<model-slug>/activations/<behavior>.safetensors``."""
    return vectors_dir() / model_slug / "activations" / f"{behavior}.safetensors"


@dataclass(frozen=True)
class ActivationSet:
    """Every pair's matching / non-matching activation per layer, and their provenance."""

    layers: Mapping[int, torch.Tensor]
    letters: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layers:
            raise CaaBakeError("an activation set needs at least one layer")
        clean: dict[int, torch.Tensor] = {}
        for layer, tensor in sorted(self.layers.items()):
            if tensor.ndim != 3 or tensor.shape[1] != 2 or tensor.shape[0] != len(self.letters):
                raise CaaBakeError(
                    f"layer {layer}: expected [{len(self.letters)}, 2, hidden] activations, "
                    f"got {tuple(tensor.shape)}"
                )
            clean[int(layer)] = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
        object.__setattr__(self, "layers", clean)
        object.__setattr__(self, "metadata", {str(k): str(v) for k, v in self.metadata.items()})

    @classmethod
    def from_pairs(
        cls,
        activations: Mapping[int, torch.Tensor],
        pairs: Sequence[ContrastPair],
        metadata: Mapping[str, str],
    ) -> ActivationSet:
        letters = "".join(answer_letter(p.matching) for p in pairs)
        return cls(activations, letters, metadata)

    @property
    def layer_ids(self) -> list[int]:
        return sorted(self.layers)

    @property
    def num_pairs(self) -> int:
        return len(self.letters)

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self.layers:
            have = ", ".join(str(x) for x in self.layer_ids)
            raise CaaBakeError(f"the activations have no layer {layer} (they have: {have})")
        return self.layers[layer]

    def merged(self, other: ActivationSet) -> ActivationSet:
        """``other``'s layers added to (and replacing) this set's; ``other``'s metadata."""
        if other.letters != self.letters:
            return other
        return ActivationSet({**self.layers, **other.layers}, other.letters, other.metadata)

    def save(self, path: Path) -> Path:
        """Write atomically as safetensors; returns ``path``."""
        tensors = {f"{_PREFIX}{k}": v for k, v in self.layers.items()}
        with atomic_file(Path(path)) as tmp:
            save_file(
                tensors, str(tmp), metadata={**self.metadata, "matching_letters": self.letters}
            )
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> ActivationSet:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise CaaBakeError(f"activation file not found: {path}")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise CaaBakeError(f"cannot read activation file {path}: {exc}") from exc
        layers: dict[int, torch.Tensor] = {}
        for name, tensor in tensors.items():
            if not name.startswith(_PREFIX) or not name[len(_PREFIX) :].isdigit():
                raise CaaBakeError(f"{path}: unexpected tensor {name!r} (expected layer.<N>)")
            layers[int(name[len(_PREFIX) :])] = tensor
        letters = metadata.pop("matching_letters", None)
        if letters is None:
            raise CaaBakeError(f"{path}: no matching_letters in the metadata")
        return cls(layers, letters, metadata)
