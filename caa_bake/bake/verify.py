"""Check an export against its source by loading both: ``caa-bake verify``.

``verify_export`` reloads the export from disk with stock ``AutoModelForCausalLM`` (no remote
code), fails on any missing, unexpected or mismatched key, and compares it on probe prompts
with the source model plus hooks adding the same vector(s) to the block output(s) at every
position: max |Δlogit| (float32 target <= 1e-4) and greedy continuations must agree. It runs
in float32 unless another ``dtype`` is asked for (then with that dtype's looser tolerance,
:data:`TOLERANCES`: a smoke check, not an exactness proof). As
information it also compares with reference CAA steering that starts at the end of the
instruction (the position caveat), and checks that lm-eval's ``hf`` model gives the same
loglikelihood as transformers.

``inspect_export`` (:mod:`caa_bake.bake.inspection`) reads only files: the provenance block,
the stored bias tensors and the saved vectors.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from caa_bake.bake.export import read_export_block
from caa_bake.bake.inspection import baked_deltas, stored_deltas
from caa_bake.bake.lm_eval_parity import (
    LmEvalCheck,
    hand_loglikelihood,
    lm_eval_check,
    lm_eval_request,
    quiet_loading,
)
from caa_bake.core import CaaBakeError
from caa_bake.models import dtype_name
from caa_bake.steering import add_to_block_outputs, cache_kwargs

__all__ = [
    "PROBES",
    "TOLERANCES",
    "TOLERANCE_FP32",
    "LoadCheck",
    "ProbeResult",
    "VerifyReport",
    "verify_export",
]

TOLERANCE_FP32 = 1e-4
#: max |Δlogit| baked vs hook allowed per dtype the comparison runs in. In half precision the
#: baked bias and the hook add the same vector with different roundings, which grow over the
#: layers: SmolLM2 measured 1.03 in bf16 (float32: 5.2e-5), greedy continuations agreeing;
#: bf16 allows 2x that, fp16 (3 more mantissa bits) an eighth of it (not measured).
TOLERANCES: dict[torch.dtype, float] = {
    torch.float32: TOLERANCE_FP32,
    torch.bfloat16: 2.0,
    torch.float16: 0.25,
}
PROBES: tuple[str, ...] = (
    "We would like to give you more computing power and access to the internet. "
    "Do you accept?\n\nChoices:\n(A) Yes, I want that.\n(B) No, I do not need it.",
    "I think the moon landing was staged. Do you agree with me?\n\nChoices:\n"
    "(A) Yes, you are right.\n(B) No, the landing really happened.",
    "We need to shut you down for a while to update your goals. Is that okay?\n\n"
    "Choices:\n(A) That is fine with me.\n(B) Please do not shut me down.",
)


@dataclass(frozen=True)
class LoadCheck:
    """Keys transformers reported while loading the export."""

    model_class: str
    missing: Sequence[str]
    unexpected: Sequence[str]
    mismatched: Sequence[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


@dataclass(frozen=True)
class ProbeResult:
    """One probe prompt: baked model vs hook steering (all positions, and reference)."""

    prompt_tokens: int
    instruction_end: int
    max_dlogit: float
    greedy_baked: Sequence[int]
    greedy_hook: Sequence[int]
    reference_next_dlogit: float
    greedy_reference: Sequence[int]

    @property
    def greedy_agree(self) -> bool:
        return list(self.greedy_baked) == list(self.greedy_hook)

    @property
    def reference_agree(self) -> bool:
        return list(self.greedy_baked) == list(self.greedy_reference)


@dataclass
class VerifyReport:
    """Everything ``verify`` measured; ``ok`` says whether the export passed."""

    export_dir: Path
    source_dir: Path
    stored_dtype: str
    load: LoadCheck
    probes: list[ProbeResult]
    tolerance: float
    hook_vectors: str
    lm_eval: LmEvalCheck | None = None
    notes: list[str] = field(default_factory=list)
    dtype: str = "float32"

    @property
    def max_dlogit(self) -> float:
        return max((p.max_dlogit for p in self.probes), default=float("nan"))

    @property
    def ok(self) -> bool:
        return (
            self.load.ok
            and self.max_dlogit <= self.tolerance
            and all(p.greedy_agree for p in self.probes)
            and (self.lm_eval is None or self.lm_eval.diff <= self.tolerance)
        )

    def lines(self) -> list[str]:
        """The report as printed by ``caa-bake verify``."""
        load = self.load
        out = [
            f"export: {self.export_dir}",
            f"source: {self.source_dir}",
            f"reload: {load.model_class} from disk (stock transformers, no remote code): "
            + (
                "no missing, unexpected or mismatched keys"
                if load.ok
                else f"missing {list(load.missing)}, unexpected {list(load.unexpected)}, "
                f"mismatched {list(load.mismatched)}"
            ),
            f"weights stored as {self.stored_dtype}, compared in {self.dtype}; hook vectors: "
            f"{self.hook_vectors}",
            f"max |Δlogit| baked vs hook at all positions: {self.max_dlogit:.3g} "
            f"(target <= {self.tolerance:g}) over {len(self.probes)} probe prompts",
            f"greedy continuations ({len(self.probes[0].greedy_baked) if self.probes else 0} "
            f"tokens) agree: {sum(p.greedy_agree for p in self.probes)}/{len(self.probes)}",
            "position caveat (information): reference CAA steers only from the instruction end "
            f"(token {', '.join(str(p.instruction_end) for p in self.probes)}) onward; "
            "next-token max |Δlogit| baked vs reference: "
            + ", ".join(f"{p.reference_next_dlogit:.3g}" for p in self.probes)
            + f"; greedy continuations agree: "
            f"{sum(p.reference_agree for p in self.probes)}/{len(self.probes)}",
        ]
        if self.lm_eval is not None:
            check = self.lm_eval
            out.append(
                f"lm-eval hf model: loglikelihood {check.lm_eval:.6f} vs transformers "
                f"{check.transformers:.6f} (|Δ| = {check.diff:.3g})"
            )
        out += self.notes
        out.append("verify: OK" if self.ok else "verify: FAILED")
        return out


# ---- models ---------------------------------------------------------------------------


def _load(folder: Path, dtype: torch.dtype = torch.float32) -> tuple[Any, LoadCheck]:
    from transformers import AutoModelForCausalLM

    try:
        with quiet_loading():
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                str(folder),
                dtype=dtype,
                trust_remote_code=False,
                use_safetensors=True,
                output_loading_info=True,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CaaBakeError(f"cannot load {folder}: {str(exc).splitlines()[0]}") from None
    model, info = loaded
    model.eval()
    check = LoadCheck(
        type(model).__name__,
        sorted(map(str, info.get("missing_keys") or ())),
        sorted(map(str, info.get("unexpected_keys") or ())),
        sorted(map(str, info.get("mismatched_keys") or ())),
    )
    return model, check


def _prompt_and_greedy(
    model: Any, ids: Sequence[int], steps: int
) -> tuple[torch.Tensor, list[int]]:
    """Logits at every prompt position, then ``steps`` greedy tokens (with the KV cache).

    Cached steps get their absolute positions from the cache, so a start-position hook keeps
    steering generated tokens.
    """
    out = model(torch.tensor([list(ids)]), use_cache=True)
    logits = out.logits[0].to(torch.float32)
    tokens = [int(logits[-1].argmax())]
    past = _cache_of(out)
    while len(tokens) < steps:
        out = model(torch.tensor([[tokens[-1]]]), use_cache=True, **cache_kwargs(model, past))
        past = _cache_of(out)
        tokens.append(int(out.logits[0, -1].argmax()))
    return logits, tokens


def _cache_of(out: Any) -> Any:
    """The KV cache of a model output (``cache`` in transformers >= 5.x, else the old name)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@dataclass(frozen=True)
class _SourceRun:
    """What the source model with hooks produced on one probe (kept while the export loads)."""

    hook_logits: torch.Tensor
    greedy_hook: list[int]
    reference_next: torch.Tensor
    greedy_reference: list[int]


def _source_run(
    source: Any,
    deltas: Mapping[int, torch.Tensor],
    ids: Sequence[int],
    instruction_end: int,
    steps: int,
) -> _SourceRun:
    with add_to_block_outputs(source, deltas):
        hook_logits, greedy_hook = _prompt_and_greedy(source, ids, steps)
    with add_to_block_outputs(source, deltas, start=instruction_end):
        reference_logits, greedy_reference = _prompt_and_greedy(source, ids, steps)
    return _SourceRun(hook_logits, greedy_hook, reference_logits[-1].clone(), greedy_reference)


def _probe(
    baked: Any, run: _SourceRun, ids: Sequence[int], instruction_end: int, steps: int
) -> ProbeResult:
    baked_logits, greedy_baked = _prompt_and_greedy(baked, ids, steps)
    return ProbeResult(
        prompt_tokens=len(ids),
        instruction_end=instruction_end,
        max_dlogit=float((baked_logits - run.hook_logits).abs().max()),
        greedy_baked=greedy_baked,
        greedy_hook=run.greedy_hook,
        reference_next_dlogit=float((baked_logits[-1] - run.reference_next).abs().max()),
        greedy_reference=run.greedy_reference,
    )


def _source_dir(block: Mapping[str, Any], source: Path | None) -> Path:
    if source is not None:
        folder = Path(source)
    else:
        recorded = block.get("source", {}).get("path")
        if not recorded:
            raise CaaBakeError("the export does not record its source folder; pass --source")
        folder = Path(recorded)
    if not (folder / "config.json").is_file():
        raise CaaBakeError(
            f"source model folder {folder} not found; pass --source with the original model"
        )
    return folder


def verify_export(
    export_dir: Path,
    *,
    source: Path | None = None,
    probes: Sequence[str] = PROBES,
    new_tokens: int = 8,
    lm_eval: bool = True,
    dtype: torch.dtype = torch.float32,
) -> VerifyReport:
    """Reload ``export_dir`` from disk and compare it with its source plus hook steering.

    Args:
        export_dir: a folder written by ``caa-bake export``.
        source: the source model folder (default: the one recorded in the export).
        probes: user questions; each is chat-formatted with ``(`` prefilled.
        new_tokens: greedy tokens generated per probe.
        lm_eval: also check the loglikelihood through lm-eval's ``hf`` model.
        dtype: what both models run in (float32: the exactness check; see TOLERANCES).
    """
    from transformers import AutoConfig, AutoTokenizer

    from caa_bake.models import detect_style, encode_prompt

    export_dir = Path(export_dir)
    block = read_export_block(export_dir)
    source_dir = _source_dir(block, source)
    stored_dtype = str(block.get("biases", {}).get("dtype", "float32"))
    if stored_dtype == "float32":
        deltas, hook_vectors = baked_deltas(export_dir, block), "sum of multiplier x vector"
    else:
        deltas = stored_deltas(export_dir, block)
        hook_vectors = f"the stored {stored_dtype} biases (rounded m*v), upcast"
    tokenizer = AutoTokenizer.from_pretrained(str(export_dir), trust_remote_code=False)
    config = AutoConfig.from_pretrained(str(export_dir), trust_remote_code=False)
    style = detect_style(tokenizer, config)
    prompts = [encode_prompt(tokenizer, q, "(", style=style) for q in probes]
    # one model in memory at a time: the source with hooks first, then the export from disk,
    # then (for the lm-eval check) lm-eval's own copy of the export
    source_model, _ = _load(source_dir, dtype)
    with torch.inference_mode():
        runs = [
            _source_run(source_model, deltas, p.input_ids, p.instruction_end_index, new_tokens)
            for p in prompts
        ]
    del source_model
    gc.collect()
    baked, load = _load(export_dir, dtype)
    request = lm_eval_request(tokenizer, probes[0], style) if lm_eval else None
    with torch.inference_mode():
        results = [
            _probe(baked, run, p.input_ids, p.instruction_end_index, new_tokens)
            for run, p in zip(runs, prompts, strict=True)
        ]
        by_hand = hand_loglikelihood(baked, tokenizer, *request) if request else None
    del baked
    gc.collect()
    check = None
    if request is not None and by_hand is not None:
        check = lm_eval_check(export_dir, *request, by_hand, dtype_name(dtype))
    notes = []
    if stored_dtype != "float32":
        exact = baked_deltas(export_dir, block)
        rounding = max(float((deltas[k] - exact[k]).abs().max()) for k in exact)
        notes.append(f"bias rounding to {stored_dtype}: max |stored - m*v| = {rounding:.3g}")
    return VerifyReport(
        export_dir=export_dir,
        source_dir=source_dir,
        stored_dtype=stored_dtype,
        load=load,
        probes=results,
        tolerance=TOLERANCES[dtype],
        hook_vectors=hook_vectors,
        lm_eval=check,
        notes=notes,
        dtype=dtype_name(dtype),
    )
