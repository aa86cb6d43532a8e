"""Restore the source checkpoint from an export: ``caa-bake unbake DIR --out DIR2``.

An export keeps what it replaced under ``caa_bake/``: the source's ``config.json``, index and
``README.md`` (``caa_bake/source/``) and the original values of biases it patched
(``caa_bake/original_biases.safetensors``). Unbaking drops the added bias shard, writes the
original bias bytes back into copies of the patched shards, renames a single-file checkpoint
back to ``model.safetensors`` and restores the replaced files, so every file is byte-identical
to the source's (files the export left out, such as pickle weights, stay out).
"""

from __future__ import annotations

from pathlib import Path

import torch

from caa_bake.bake.export import (
    META_DIR,
    REPLACED_FILES,
    prepare_target,
    read_export_block,
)
from caa_bake.bake.safetensors_io import (
    copy_file,
    default_mode,
    link_file,
    open_checkpoint,
    patch_tensor,
    read_header,
    read_tensor,
)
from caa_bake.core import CaaBakeError, atomic_dir

__all__ = ["unbake_checkpoint"]


def _original_biases(folder: Path, relative: str | None) -> dict[str, torch.Tensor]:
    if not relative:
        return {}
    header = read_header(folder / relative)
    return {name: read_tensor(header, name) for name in header.tensors}


def unbake_checkpoint(
    export_dir: Path, out: Path, *, link: bool = False, force: bool = False
) -> Path:
    """Write the export's source checkpoint (original weights and config) to ``out``.

    Args:
        export_dir: a folder written by ``caa-bake export``.
        out: where to write the restored checkpoint (must not exist unless ``force``).
        link: reflink or hard-link unchanged shards instead of copying them.
        force: replace an existing ``out``.

    Returns:
        ``out`` as an absolute path.
    """
    export_dir = Path(export_dir)
    block = read_export_block(export_dir)
    files = block.get("files")
    if not isinstance(files, dict):
        raise CaaBakeError(
            f"{export_dir} was baked in memory and saved without the files unbake needs; "
            "reload the original model instead"
        )
    checkpoint = open_checkpoint(export_dir)
    originals = _original_biases(export_dir, files.get("original_biases"))
    back = {new: old for old, new in dict(files.get("renamed") or {}).items()}
    bias_shard = files.get("bias_shard")
    copies = export_dir / str(files.get("source_copies"))
    if not (copies / "config.json").is_file():
        raise CaaBakeError(f"{copies / 'config.json'} is missing; cannot restore the config")
    out = prepare_target(out, force=force, protect=[export_dir])
    try:
        with atomic_dir(out, overwrite=force) as tmp:
            tmp.chmod(default_mode(directory=True))
            for name, header in sorted(checkpoint.shards.items()):
                if name == bias_shard:
                    continue
                dst = tmp / back.get(name, name)
                patches = sorted(t for t in originals if checkpoint.weight_map.get(t) == name)
                if patches:
                    copy_file(header.path, dst)
                    for tensor in patches:
                        patch_tensor(header, tensor, dst, originals[tensor])
                elif link:
                    link_file(header.path, dst)
                else:
                    copy_file(header.path, dst)
            for name in REPLACED_FILES:
                if (copies / name).is_file():
                    copy_file(copies / name, tmp / name)
            skip = {*checkpoint.shards, *REPLACED_FILES}
            for path in sorted(export_dir.iterdir(), key=lambda p: p.name):
                if path.name in skip or path.name == META_DIR or not path.is_file():
                    continue
                copy_file(path, tmp / path.name)
    except OSError as exc:
        raise CaaBakeError(f"unbake to {out} failed: {exc.strerror or exc}") from None
    return out
