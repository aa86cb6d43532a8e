"""Write a baked checkpoint from files; the full model is never loaded.

The export of ``source`` with bakes ``[(behavior, layer, multiplier, vector), ...]``:

- unchanged shards are copied in the kernel (``copy_file_range``) or, with ``link``,
  reflinked / hard-linked;
- new bias tensors (Llama family: ``down_proj.bias`` of each steered layer plus explicit
  zero gate/up/down biases everywhere) go into an added shard ``model-caa-bake.safetensors``
  and ``model.safetensors.index.json`` is rewritten (a single-file checkpoint becomes an
  indexed one, its file renamed ``model-00001-of-00001.safetensors``);
- native biases (GPT-2, GPT-NeoX, OPT) are patched in place in the *copied* shard;
- ``config.json`` gains the bias flag and a ``caa_bake`` provenance block, ``README.md``
  becomes a model card, and ``caa_bake/`` keeps what :mod:`caa_bake.bake.unbake` needs (the
  source's replaced files and the original values of patched biases).

Biases are computed in float32 and stored in the model's dtype. Everything is written into
a temporary folder beside the target, fsynced and renamed, so the target appears whole or
not at all. The same inputs give byte-identical exports. The bakes come from
:mod:`caa_bake.bake.bakes`, the tensors to add or patch from :mod:`caa_bake.bake.plan`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caa_bake import __version__
from caa_bake.bake.architectures import BakeRule, rule_for
from caa_bake.bake.bakes import Bake
from caa_bake.bake.model_card import render_model_card
from caa_bake.bake.plan import BiasPlan, plan_biases
from caa_bake.bake.safetensors_io import (
    INDEX_FILE,
    SINGLE_FILE,
    Checkpoint,
    copy_file,
    link_file,
    open_checkpoint,
    patch_tensor,
    write_shard,
)
from caa_bake.bake.source import SourceModel, load_source_config
from caa_bake.core import CaaBakeError, atomic_dir, default_mode, is_quiet

__all__ = [
    "BIAS_SHARD",
    "CONFIG_KEY",
    "EXPORT_FORMAT",
    "META_DIR",
    "ORIGINAL_BIASES",
    "RENAMED_SINGLE",
    "REPLACED_FILES",
    "SOURCE_COPIES",
    "VECTORS_FILE",
    "ExportResult",
    "export_checkpoint",
    "prepare_target",
    "read_export_block",
]

EXPORT_FORMAT = 1
CONFIG_KEY = "caa_bake"
BIAS_SHARD = "model-caa-bake.safetensors"
RENAMED_SINGLE = "model-00001-of-00001.safetensors"
META_DIR = "caa_bake"
SOURCE_COPIES = f"{META_DIR}/source"
ORIGINAL_BIASES = f"{META_DIR}/original_biases.safetensors"
#: each bake's float32 direction as ``bake.<i>`` (so verify can rebuild the hook vectors)
VECTORS_FILE = f"{META_DIR}/vectors.safetensors"
#: files the export rewrites; the source's versions are kept under ``caa_bake/source/``
REPLACED_FILES = ("config.json", INDEX_FILE, "README.md")
#: weights in other formats would be stale (unbaked) copies: never exported
_OTHER_WEIGHTS = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".gguf",
    ".onnx",
)
#: test hook: seconds to sleep after each file written (lets a test kill an export mid-way)
DELAY_ENV = "CAA_BAKE_TEST_EXPORT_DELAY"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    rule: BakeRule
    plan: BiasPlan
    methods: Mapping[str, str] = field(default_factory=dict)
    skipped: Sequence[str] = ()

    def summary(self) -> list[str]:
        """Human-readable lines describing the export."""
        lines = [f"rule: {self.rule.name} ({self.rule.note})"]
        for layer, name in sorted(self.plan.steered.items()):
            lines.append(
                f"layer {layer}: {name} (|delta| = {float(self.plan.deltas[layer].norm()):.6g})"
            )
        n_zero = len(self.plan.added) - sum(
            n in self.plan.added for n in self.plan.steered.values()
        )
        if self.plan.added:
            lines.append(
                f"added {len(self.plan.added)} bias tensors ({n_zero} zero) in {BIAS_SHARD}"
            )
        if self.plan.patched:
            lines.append(
                f"patched {len(self.plan.patched)} existing bias tensor(s) in copied shards"
            )
        counts: dict[str, int] = {}
        for method in self.methods.values():
            counts[method] = counts.get(method, 0) + 1
        lines.append("shards: " + ", ".join(f"{n} {m}" for m, n in sorted(counts.items())))
        if self.skipped:
            lines.append("not exported: " + ", ".join(self.skipped))
        return lines


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def prepare_target(out: Path, *, force: bool, protect: Iterable[Path] = ()) -> Path:
    """Check that ``out`` can be written (before any work is done) and return it absolute.

    Refuses an existing ``out`` without ``force``, a target inside (or containing) a
    protected folder such as the source, and a parent folder that cannot be written.
    """
    out = Path(os.path.abspath(Path(out).expanduser()))
    for folder in protect:
        folder = Path(folder).resolve()
        if _inside(out.resolve(), folder) or _inside(folder, out.resolve()):
            raise CaaBakeError(
                f"refusing to write {out}: it overlaps the source folder {folder}; "
                "choose an --out outside it"
            )
    if out.exists() or out.is_symlink():
        if not force:
            raise CaaBakeError(f"{out} already exists; pass --force to replace it")
        if not out.is_dir():
            raise CaaBakeError(f"{out} exists and is not a folder; remove it first")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CaaBakeError(
            f"cannot create the output folder {out.parent}: {exc.strerror or exc}"
        ) from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise CaaBakeError(f"cannot write to {out.parent}: permission denied")
    return out


def _pause() -> None:
    delay = os.environ.get(DELAY_ENV)
    if delay:
        time.sleep(float(delay))


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise CaaBakeError(
            f"not enough free space in {folder}: the export needs {needed / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free (--link needs almost none on the same filesystem)"
        )


class _Bytes:
    """A byte-count progress bar (silent when quiet)."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=total, desc=desc, unit="B", unit_scale=True, disable=is_quiet(), leave=False
        )

    def __call__(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def _write_shards(
    tmp: Path, checkpoint: Checkpoint, plan: BiasPlan, renamed: Mapping[str, str], link: bool
) -> dict[str, str]:
    methods: dict[str, str] = {}
    bar = _Bytes(checkpoint.total_bytes, "export")
    try:
        for name, header in sorted(checkpoint.shards.items()):
            dst = tmp / renamed.get(name, name)
            patches = sorted(t for t in plan.patched if checkpoint.weight_map[t] == name)
            if patches:
                copy_file(header.path, dst, on_bytes=bar)
                for tensor in patches:
                    patch_tensor(header, tensor, dst, plan.patched[tensor][1])
                methods[name] = "copied+patched"
            elif link:
                methods[name] = link_file(header.path, dst)
                bar(header.path.stat().st_size)
            else:
                copy_file(header.path, dst, on_bytes=bar)
                methods[name] = "copied"
            _pause()
    finally:
        bar.close()
    return methods


def _index(checkpoint: Checkpoint, plan: BiasPlan, renamed: Mapping[str, str]) -> dict[str, Any]:
    weight_map = {t: renamed.get(f, f) for t, f in checkpoint.weight_map.items()}
    weight_map.update(dict.fromkeys(plan.added, BIAS_SHARD))
    total = sum(checkpoint.info(t).nbytes for t in checkpoint.weight_map)
    total += sum(t.numel() * t.element_size() for t in plan.added.values())
    metadata = dict(checkpoint.index.get("metadata") or {})  # type: ignore[call-overload]
    metadata["total_size"] = total
    return {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}


def _copy_other_files(source: Path, tmp: Path, skip: set[str]) -> list[str]:
    """Copy tokenizer, generation config, chat template, ...; return what was left out."""
    skipped: list[str] = []
    for path in sorted(source.iterdir(), key=lambda p: p.name):
        name = path.name
        if name in skip or name in REPLACED_FILES:
            continue
        if path.is_dir():
            skipped.append(f"{name}/")
        elif name.startswith(".") and name != ".gitattributes":
            continue
        elif name.endswith(_OTHER_WEIGHTS):
            skipped.append(name)
        elif path.is_file():
            copy_file(path, tmp / name)
    return skipped


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def finetune_block(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``caa_bake`` block of a ``caa-bake finetune`` checkpoint's config, else None.

    A finetuned checkpoint is a plain model that may be baked into (a *combined* model); a
    caa-bake export (a bake already in the weights) may not.
    """
    block = raw.get(CONFIG_KEY)
    if isinstance(block, dict) and block.get("kind") == "finetune":
        return dict(block)
    return None


def _source_record(
    source: SourceModel, raw: Mapping[str, Any], finetune: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "model_id": source.model_id,
        "revision": source.revision,
        "path": str(source.path),
        "weights_fingerprint": source.weights_fingerprint,
        "model_type": raw.get("model_type"),
        "architectures": raw.get("architectures"),
    }
    if finetune is not None:
        record["finetune"] = dict(finetune)
    return record


def export_checkpoint(
    source: SourceModel,
    bakes: Sequence[Bake],
    out: Path,
    *,
    link: bool = False,
    force: bool = False,
    before_commit: Callable[[Path], None] | None = None,
) -> ExportResult:
    """Write a standalone checkpoint of ``source`` with ``bakes`` baked in, at ``out``.

    Args:
        source: the source checkpoint (a local folder with config.json and safetensors).
        bakes: steering terms; several at one layer add up.
        out: the export folder (must not exist unless ``force``).
        link: reflink or hard-link unchanged shards instead of copying them.
        force: replace an existing ``out`` (only once the new export is complete).
        before_commit: called with the complete temporary folder before it is renamed to
            ``out`` (e.g. verification); if it raises, nothing appears at ``out``.

    Returns:
        What was written. Nothing is written at all when an input is rejected.
    """
    folder = Path(source.path)
    raw, resolved = load_source_config(folder)
    finetune = finetune_block(raw)
    if CONFIG_KEY in raw and finetune is None:
        raise CaaBakeError(
            f"{folder} is already a caa-bake export; bake into the original model (give "
            "several --bake to stack vectors) or run `caa-bake unbake` first"
        )
    rule = rule_for(resolved.to_dict())
    checkpoint = open_checkpoint(folder)
    plan = plan_biases(checkpoint, rule, resolved, bakes)
    out = prepare_target(out, force=force, protect=[folder])
    _check_space(out.parent, 0 if link else checkpoint.total_bytes)
    indexed = checkpoint.indexed or bool(plan.added)
    renamed = {SINGLE_FILE: RENAMED_SINGLE} if indexed and not checkpoint.indexed else {}
    block: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "tool": f"caa-bake {__version__}",
        "rule": rule.name,
        "source": _source_record(source, raw, finetune),
        "bakes": [b.record() for b in bakes],
        "biases": {
            "dtype": str(plan.dtype).removeprefix("torch."),
            "scale": plan.scale,
            "steered": {str(k): v for k, v in sorted(plan.steered.items())},
            "delta_norm": {str(k): float(v.norm()) for k, v in sorted(plan.deltas.items())},
            "added": len(plan.added),
            "patched": sorted(plan.patched),
        },
        "files": {
            "bias_shard": BIAS_SHARD if plan.added else None,
            "renamed": dict(renamed),
            "source_copies": SOURCE_COPIES,
            "original_biases": ORIGINAL_BIASES if plan.patched else None,
            "vectors": VECTORS_FILE,
        },
    }
    config = rule.export_config(raw, resolved.to_dict())
    try:
        with atomic_dir(out, overwrite=force) as tmp:
            tmp.chmod(default_mode(directory=True))
            methods = _write_shards(tmp, checkpoint, plan, renamed, link)
            if plan.added:
                write_shard(tmp / BIAS_SHARD, plan.added)
            if indexed:
                _write_json(tmp / INDEX_FILE, _index(checkpoint, plan, renamed))
            copies = tmp / SOURCE_COPIES
            copies.mkdir(parents=True)
            for name in REPLACED_FILES:
                if (folder / name).is_file():
                    copy_file(folder / name, copies / name)
            write_shard(
                tmp / VECTORS_FILE, {f"bake.{i}": b.vector[b.layer] for i, b in enumerate(bakes)}
            )
            if plan.patched:
                write_shard(tmp / ORIGINAL_BIASES, {k: v[0] for k, v in plan.patched.items()})
            skipped = _copy_other_files(folder, tmp, set(checkpoint.shards))
            block["files"]["skipped"] = skipped
            config[CONFIG_KEY] = block
            _write_json(tmp / "config.json", config)
            (tmp / "README.md").write_text(render_model_card(out.name, config), encoding="utf-8")
            _pause()
            if before_commit is not None:
                before_commit(tmp)
    except FileExistsError:
        raise CaaBakeError(f"{out} appeared while exporting; pass --force to replace it") from None
    except OSError as exc:
        raise CaaBakeError(f"export to {out} failed: {exc.strerror or exc}") from None
    return ExportResult(out, rule, plan, methods, skipped)


def read_export_block(folder: Path) -> dict[str, Any]:
    """The ``caa_bake`` provenance block of an export's ``config.json``.

    Raises:
        CaaBakeError: no config.json, or it has no ``caa_bake`` block (not an export).
    """
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaaBakeError(f"{folder} has no config.json: not a model folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaaBakeError(f"cannot read {path}: {exc}") from None
    block = config.get(CONFIG_KEY) if isinstance(config, dict) else None
    if not isinstance(block, dict):
        raise CaaBakeError(f"{folder} is not a caa-bake export (config.json has no caa_bake block)")
    return block
