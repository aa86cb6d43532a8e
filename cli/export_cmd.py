"""``caa-bake export``, ``verify``, ``inspect`` and ``unbake``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from caa_bake.core import CaaBakeError
from cli.common import (
    DatasetOpt,
    ModelOpt,
    NormalizeWithOpt,
    QuietOpt,
    TestDatasetOpt,
    apply_quiet,
    normalize_with,
    register_dataset,
    say,
)

if TYPE_CHECKING:
    import torch

    from caa_bake.bake import BakeSpec

__all__ = ["register"]

ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")]
VerifyDtypeOpt = Annotated[
    str,
    typer.Option(
        "--verify-dtype",
        help="dtype of the baked-vs-hook comparison: float32 (default, the exactness check) "
        "or bfloat16/float16 (a looser smoke check).",
    ),
]
LinkOpt = Annotated[
    bool,
    typer.Option(
        "--link",
        help="Reflink or hard-link unchanged shards instead of copying them (same filesystem; "
        "a hard-linked file is shared with the source: never edit it in place).",
    ),
]


def _comparison_dtype(name: str, flag: str) -> torch.dtype:
    """The dtype verification compares in: explicit (never ``auto``), runnable on the CPU."""
    from caa_bake.models import resolve_dtype

    if name.strip().lower() == "auto":
        raise CaaBakeError(f"verification compares in an explicit dtype: use {flag} float32")
    return resolve_dtype(name, "cpu")


def export(
    behavior: Annotated[
        str | None, typer.Option("--behavior", "-b", help="Behavior whose vector to bake.")
    ] = None,
    layer: Annotated[
        int | None, typer.Option("--layer", "-l", help="Decoder block (0-based).")
    ] = None,
    mult: Annotated[
        float | None, typer.Option("--mult", help="Multiplier (the paper uses -2 ... 2).")
    ] = None,
    bake: Annotated[
        list[str] | None,
        typer.Option(
            "--bake",
            help="behavior:layer:mult (repeatable; biases add). A vector file may stand in "
            "for the behavior: path/vec.safetensors:layer:mult.",
        ),
    ] = None,
    model: ModelOpt = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Hub revision of --model.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: exported_models/<name>)."),
    ] = None,
    vector: Annotated[
        Path | None,
        typer.Option("--vector", help="Use this vector file instead of the cached vector."),
    ] = None,
    no_normalize: Annotated[
        bool,
        typer.Option("--no-normalize", help="Bake the raw vector, not the paper-normalized one."),
    ] = False,
    normalize_with_: NormalizeWithOpt = None,
    dataset: DatasetOpt = None,
    test_dataset: TestDatasetOpt = None,
    vector_from: Annotated[
        str | None,
        typer.Option(
            "--vector-from",
            help="Take the vector from this model (hub id, folder or 'smollm2-135m-instruct') "
            "instead of --model: bake the base model's vector into a finetuned checkpoint "
            "(a combined model, as in the paper).",
        ),
    ] = None,
    link: LinkOpt = False,
    force: ForceOpt = False,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the verification after writing.")
    ] = False,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="dtype a missing vector is extracted in (and a cached one must have): auto, "
            "float32, bfloat16 or float16 (auto: see `extract --help`).",
        ),
    ] = "auto",
    verify_dtype: VerifyDtypeOpt = "float32",
    quiet: QuietOpt = False,
) -> None:
    """Bake steering vector(s) into a standalone Hugging Face checkpoint, or into a GGUF.

    With --model path/to/model.gguf the output is a .gguf file: the source with the vector
    added as an F32 blk.L.ffn_down.bias, every other tensor byte-identical.
    """
    from caa_bake.bake import (
        BakeSpec,
        export_checkpoint,
        export_name,
        parse_bake_spec,
        resolve_bakes,
        verify_export,
    )
    from caa_bake.core import exports_dir
    from caa_bake.models import parse_dtype, resolve_dtype, resolve_model

    apply_quiet(quiet)
    parse_dtype(dtype)
    check_dtype = _comparison_dtype(verify_dtype, "--verify-dtype")
    extract_dtype = resolve_dtype(dtype, "cpu")
    specs: list[BakeSpec] = []
    if dataset is not None and behavior is None:
        behavior = dataset.stem  # a custom behavior is named after its file by default
    given = [x is not None for x in (behavior, layer, mult)]
    if any(given):
        if not all(given):
            raise CaaBakeError("give --behavior, --layer and --mult together (or use --bake)")
        assert behavior is not None and layer is not None and mult is not None
        specs.append(BakeSpec(behavior, layer, mult, vector))
    elif vector is not None:
        raise CaaBakeError("--vector needs --behavior (its name), --layer and --mult")
    specs += [parse_bake_spec(text) for text in bake or []]
    if not specs:
        raise CaaBakeError("nothing to bake: give --behavior B --layer L --mult M, or --bake")
    norm_set = normalize_with(normalize_with_)
    if norm_set is not None and no_normalize:
        raise CaaBakeError("--normalize-with names a normalization set; drop --no-normalize")
    if dataset is not None and vector is not None:
        raise CaaBakeError("--dataset registers pairs to extract the vector from; drop --vector")
    if model is not None and model.strip().lower().endswith(".gguf"):
        if revision is not None or link:
            raise CaaBakeError("--revision and --link do not apply to a GGUF --model")
        _export_gguf(
            Path(model).expanduser(),
            specs,
            out,
            vector_from,
            force,
            dataset,
            test_dataset,
            dict(normalized=not no_normalize, dtype=extract_dtype, normalize_with=norm_set),
        )
        return
    ref = resolve_model(model, revision=revision)
    donor = None if vector_from is None else resolve_model(vector_from)
    if donor is not None and any(spec.vector_file is not None for spec in specs):
        raise CaaBakeError("--vector-from takes cached vectors; it cannot be used with --vector")
    register_dataset([behavior] if behavior else [], dataset, test_dataset)
    bakes = resolve_bakes(
        ref,
        specs,
        normalized=not no_normalize,
        status=say,
        vector_model=donor,
        dtype=extract_dtype,
        normalize_with=norm_set,
    )
    target = out if out is not None else exports_dir() / export_name(ref.slug, bakes)
    lines: list[str] = []

    def check(folder: Path) -> None:
        say("verifying the export (reload from disk, compare with hook steering) ...")
        report = verify_export(folder, source=ref.path, dtype=check_dtype)
        report.export_dir = target
        lines.extend(report.lines())
        if not report.ok:
            for line in lines:
                typer.echo(line)
            raise CaaBakeError(f"verification failed; nothing was written to {target}")

    result = export_checkpoint(
        ref, bakes, target, link=link, force=force, before_commit=None if no_verify else check
    )
    for line in [*result.summary(), *lines]:
        typer.echo(line)
    typer.echo(f"exported: {result.path}")


def _export_gguf(
    source: Path,
    specs: list[BakeSpec],
    out: Path | None,
    vector_from: str | None,
    force: bool,
    dataset: Path | None,
    test_dataset: Path | None,
    options: dict[str, Any],
) -> None:
    """Bake into a GGUF: the vectors come from the weights the GGUF dequantizes to."""
    from caa_bake.bake import bake_gguf, export_name, gguf_model_ref, read_gguf, resolve_bakes
    from caa_bake.core import exports_dir
    from caa_bake.models import resolve_model

    if out is not None and out.exists() and not force:
        raise CaaBakeError(f"{out} exists; pass --force to replace it")
    info = read_gguf(source)  # a bad or unsupported file fails before any vector work
    folder = None if vector_from is None else resolve_model(vector_from)
    ref, digest = gguf_model_ref(source, vector_from=folder)
    register_dataset([specs[0].behavior] if dataset is not None else [], dataset, test_dataset)
    bakes = resolve_bakes(ref, specs, status=say, **options)
    target = out if out is not None else exports_dir() / f"{export_name(ref.slug, bakes)}.gguf"
    say(f"baking into a copy of {source.name} ...")
    result = bake_gguf(info, bakes, target, ref=ref, source_sha256=digest, force=force)
    for line in result.summary():
        typer.echo(line)
    typer.echo(f"exported: {result.path}")
    typer.echo(f"check it in llama.cpp: caa-bake verify {result.path}")


def verify(
    export_dir: Annotated[
        Path, typer.Argument(help="An export folder, or a .gguf written by export.")
    ],
    source: Annotated[
        Path | None,
        typer.Option(
            "--source",
            help="Source model folder (default: the one recorded); for a .gguf export the "
            "source .gguf (default: the embedded SmolLM2 GGUF when it is the source).",
        ),
    ] = None,
    tokens: Annotated[
        int, typer.Option("--tokens", min=1, help="Greedy tokens per probe prompt.")
    ] = 8,
    no_lm_eval: Annotated[
        bool, typer.Option("--no-lm-eval", help="Skip the lm-eval loglikelihood check.")
    ] = False,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="float32 (default, the exactness check) or bfloat16/float16 (a looser "
            "smoke check); auto is not taken here.",
        ),
    ] = "float32",
    no_f32: Annotated[
        bool,
        typer.Option(
            "--no-f32",
            help="GGUF export: skip the exact check on F32-dequantized copies of a quantized "
            "GGUF (it writes two temporary F32 files, ~4 bytes per parameter each).",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Reload an export from disk and compare it with its source plus hook steering.

    A .gguf export is checked in llama.cpp against its source GGUF plus llama.cpp's own
    control vector (needs the llama extra: bash scripts/setup.sh --llama).
    """
    from caa_bake.bake import verify_export

    apply_quiet(quiet)
    if export_dir.suffix.lower() == ".gguf":
        _verify_gguf(export_dir, source, tokens, dtype, not no_f32)
        return
    report = verify_export(
        export_dir,
        source=source,
        new_tokens=tokens,
        lm_eval=not no_lm_eval,
        dtype=_comparison_dtype(dtype, "--dtype"),
    )
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        raise CaaBakeError(f"{export_dir} failed verification (see above)")


def _verify_gguf(export: Path, source: Path | None, tokens: int, dtype: str, f32: bool) -> None:
    from caa_bake.bake import verify_gguf

    if dtype.strip().lower() not in ("float32", "fp32"):
        raise CaaBakeError("--dtype does not apply to a GGUF export (llama.cpp runs the file)")
    if not export.is_file():
        raise CaaBakeError(f"GGUF file {export} does not exist")
    say("verifying the GGUF in llama.cpp (baked vs source + control vector) ...")
    report = verify_gguf(export, source=source, new_tokens=tokens, exact=f32)
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        raise CaaBakeError(f"{export} failed verification (see above)")


def inspect(export_dir: Annotated[Path, typer.Argument(help="An export folder.")]) -> None:
    """Show what is baked into an export (reads files only)."""
    from caa_bake.bake import inspect_export

    for line in inspect_export(export_dir):
        typer.echo(line)


def unbake(
    export_dir: Annotated[Path, typer.Argument(help="An export folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the original model.")],
    link: LinkOpt = False,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Restore the original weights and config of an export."""
    from caa_bake.bake import unbake_checkpoint

    apply_quiet(quiet)
    typer.echo(f"restored: {unbake_checkpoint(export_dir, out, link=link, force=force)}")


def register(app: typer.Typer) -> None:
    """Add ``export``, ``verify``, ``inspect`` and ``unbake`` to ``app``."""
    app.command("export")(export)
    app.command("verify")(verify)
    app.command("inspect")(inspect)
    app.command("unbake")(unbake)
