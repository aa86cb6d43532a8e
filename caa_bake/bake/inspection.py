"""Read what is baked into an export from its files alone: ``caa-bake inspect``.

:func:`baked_deltas` rebuilds ``sum(m x v)`` per layer from the export's saved vectors;
:func:`stored_deltas` reads what the stored biases add; :func:`inspect_export` describes
the provenance block and checks that each stored bias equals ``scale x sum(m x v)`` in its
dtype. Nothing is loaded into a model (that is :mod:`caa_bake.bake.verify`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from caa_bake.bake.export import read_export_block
from caa_bake.bake.safetensors_io import open_checkpoint, read_header, read_tensor
from caa_bake.core import CaaBakeError
from caa_bake.steering import SteeringVector

__all__ = ["baked_deltas", "inspect_export", "stored_deltas"]


def baked_deltas(export_dir: Path, block: Mapping[str, Any]) -> dict[int, torch.Tensor]:
    """Per layer, ``sum(m x v)`` in float32, rebuilt from the export's saved vectors.

    Each saved vector's sha256 is checked against the provenance record.
    """
    files = block.get("files") or {}
    path = Path(export_dir) / str(files.get("vectors") or "")
    if not files.get("vectors") or not path.is_file():
        raise CaaBakeError(f"{export_dir} has no saved vectors ({path.name}); re-export it")
    header = read_header(path)
    deltas: dict[int, torch.Tensor] = {}
    for i, bake in enumerate(block.get("bakes", [])):
        layer = int(bake["layer"])
        vector = SteeringVector({layer: read_tensor(header, f"bake.{i}")})
        if vector.sha256(layer) != bake["vector_sha256"]:
            raise CaaBakeError(f"{path}: bake {i} vector does not match its recorded sha256")
        hidden = vector.hidden_size
        deltas[layer] = deltas.get(layer, torch.zeros(hidden)) + vector[layer] * float(
            bake["multiplier"]
        )
    return deltas


def stored_deltas(export_dir: Path, block: Mapping[str, Any]) -> dict[int, torch.Tensor]:
    """Per steered layer, what the stored bias adds to the block output (float32).

    ``(stored bias - original bias) / scale``, with the original read from the export's
    ``original_biases`` file for patched (native) biases, zero for added ones.
    """
    export_dir = Path(export_dir)
    checkpoint = open_checkpoint(export_dir)
    biases = block.get("biases", {})
    files = block.get("files") or {}
    originals: dict[str, torch.Tensor] = {}
    if files.get("original_biases"):
        header = read_header(export_dir / files["original_biases"])
        originals = {n: read_tensor(header, n) for n in header.tensors}
    scale = float(biases.get("scale", 1.0))
    out: dict[int, torch.Tensor] = {}
    for layer, name in biases.get("steered", {}).items():
        stored = read_tensor(checkpoint.header_of(name), name).to(torch.float32)
        base = originals.get(name)
        original = base.to(torch.float32) if base is not None else torch.zeros_like(stored)
        out[int(layer)] = (stored - original) / scale
    return out


def inspect_export(export_dir: Path) -> list[str]:
    """Describe what is baked into ``export_dir`` (files only; nothing is loaded)."""
    export_dir = Path(export_dir)
    block = read_export_block(export_dir)
    source = block.get("source", {})
    lines = [
        f"export: {export_dir}",
        f"made by: {block.get('tool')} (format {block.get('format')}), rule {block.get('rule')}",
        f"source: {source.get('model_id')}"
        + (f" @ {source['revision']}" if source.get("revision") else "")
        + f" ({source.get('model_type')})",
        "bakes:",
    ]
    for bake in block.get("bakes", []):
        norm_set = bake.get("normalization_set") or []
        lines.append(
            f"  {bake['behavior']}: layer {bake['layer']}, multiplier {bake['multiplier']:g}, "
            f"|v| = {bake['vector_norm']:.6g}, sha256 {bake['vector_sha256'][:16]}, "
            + (f"normalized over {len(norm_set)} behaviors" if norm_set else "not normalized")
        )
    biases = block.get("biases", {})
    if block.get("files") is None:
        lines.append("baked in memory and saved: no saved vectors to check the biases against")
        return lines
    expected = baked_deltas(export_dir, block)
    actual = stored_deltas(export_dir, block)
    for layer, name in sorted(biases.get("steered", {}).items(), key=lambda kv: int(kv[0])):
        want, got = expected[int(layer)], actual[int(layer)]
        err = float((want - got).abs().max())
        lines.append(
            f"  bias {name} ({biases.get('dtype')}): adds |{float(got.norm()):.6g}| to block "
            f"{layer}; max |stored - m*v| = {err:.3g}"
        )
    return lines
