"""``caa-bake analyze similarity``: cosine similarities of steering vectors.

Three views, all from cached vector files (nothing is extracted here):

- **across layers**: for each behavior, ``cos(v[i], v[j])`` for every pair of layers (the
  paper's layer-similarity figure: nearby layers are similar, similarity decays with distance);
- **across behaviors** at one layer: ``cos(v_a[L], v_b[L])`` (two behaviors or more);
- **across models** (``--compare-model``): ``cos(v_model1[L], v_model2[L])`` per layer, e.g. a
  base model against its finetuned checkpoint; both must share a hidden size.

Cosines do not depend on the vectors' scale, so raw and normalized vectors give the same
numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig

from caa_bake.analysis.figures import plot_heatmaps, plot_model_cosines
from caa_bake.analysis.run import (
    AnalysisRun,
    check_layers_in,
    load_vector,
    provenance,
    resolve_behaviors,
    run_target,
    vector_record,
    write_csv_rows,
    write_json,
    writing_run,
)
from caa_bake.core import CaaBakeError
from caa_bake.models import ModelRef, hidden_size, num_layers, resolve_model
from caa_bake.steering import SteeringVector, parse_layers, vector_path

__all__ = ["SimilarityJob", "cosine_matrix", "run_similarity_job"]


def cosine_matrix(rows: torch.Tensor) -> torch.Tensor:
    """``[n, n]`` cosine similarities (float64) of the rows of ``rows`` (``[n, hidden]``)."""
    x = rows.double()
    norms = x.norm(dim=1)
    if bool((norms == 0).any()):
        raise CaaBakeError("a zero vector has no direction; its cosine is undefined")
    unit = x / norms[:, None]
    return (unit @ unit.T).clamp(-1.0, 1.0)


@dataclass(frozen=True)
class SimilarityJob:
    """What ``caa-bake analyze similarity`` was asked to do."""

    behaviors: list[str]
    layers: str | None = None  # None: the layers every vector file holds
    layer: int | None = None  # for the behavior matrix; None: the middle of ``layers``
    model: str | None = None
    compare_model: str | None = None
    normalized: bool = False
    run: str | None = None
    force: bool = False


def _check_same_width(ref: ModelRef, other: ModelRef) -> None:
    sizes = [hidden_size(AutoConfig.from_pretrained(r.path)) for r in (ref, other)]
    if sizes[0] != sizes[1]:
        raise CaaBakeError(
            f"cannot compare vectors of {ref.model_id} (hidden size {sizes[0]}) and "
            f"{other.model_id} (hidden size {sizes[1]}): models must share a hidden size"
        )


def _pick_layers(
    job: SimilarityJob, vectors: dict[str, tuple[SteeringVector, Any]], n_layers: int
) -> list[int]:
    if job.layers is None:
        common = set.intersection(*(set(v.layer_ids) for v, _ in vectors.values()))
        if not common:
            raise CaaBakeError("the vector files share no layer; extract the same layers")
        return sorted(common)
    layers = parse_layers(job.layers, n_layers)
    for name, (vector, path) in vectors.items():
        fix = f"extract it with `caa-bake extract --behavior {name} --layers {job.layers}`"
        check_layers_in(f"the vector file {path}", vector.layer_ids, layers, fix)
    return layers


def _matrix_rows(kind: str, labels: Sequence[str], matrix: torch.Tensor, **keys: Any) -> list:
    return [
        {"view": kind, **keys, "row": a, "column": b, "cosine": round(float(matrix[i, j]), 6)}
        for i, a in enumerate(labels)
        for j, b in enumerate(labels)
    ]


def run_similarity_job(job: SimilarityJob, *, status: Callable[[str], None]) -> AnalysisRun:
    """Validate everything, compute the cosines, write ``similarity.*`` and the figures."""
    ref = resolve_model(job.model)
    names = resolve_behaviors(
        job.behaviors, lambda b: vector_path(ref.slug, b, normalized=job.normalized).is_file()
    )
    other = resolve_model(job.compare_model) if job.compare_model else None
    if other is not None:
        _check_same_width(ref, other)
    n_layers = num_layers(AutoConfig.from_pretrained(ref.path))
    folder = run_target(job.run, "similarity", ref.slug, force=job.force)
    vectors = {b: load_vector(ref, b, normalized=job.normalized) for b in names}
    layers = _pick_layers(job, vectors, n_layers)
    layer = job.layer if job.layer is not None else layers[len(layers) // 2]
    if len(names) > 1:
        for name, (vector, path) in vectors.items():
            fix = f"extract it with `caa-bake extract --behavior {name} --layers {layer}`"
            check_layers_in(f"the vector file {path}", vector.layer_ids, [layer], fix)
    compared = {b: load_vector(other, b, normalized=job.normalized) for b in names} if other else {}
    for name, (vector, path) in compared.items():
        fix = f"extract them with `caa-bake extract --model {job.compare_model} --behavior {name}`"
        check_layers_in(f"the vector file {path}", vector.layer_ids, layers, fix)
    status(f"model {ref.model_id}; {len(names)} behavior(s); layers {layers}; results in {folder}")

    rows: list[dict[str, Any]] = []
    heat: dict[str, tuple[list[str], torch.Tensor]] = {}
    labels = [str(x) for x in layers]
    for name, (vector, _) in vectors.items():
        matrix = cosine_matrix(torch.stack([vector[x] for x in layers]))
        heat[name] = (labels, matrix)
        rows += _matrix_rows("layers", labels, matrix, behavior=name, layer="")
    payload: dict[str, Any] = {
        "layers": layers,
        "across_layers": {b: m.tolist() for b, (_, m) in heat.items()},
    }
    behavior_matrix = None
    if len(names) > 1:
        behavior_matrix = cosine_matrix(torch.stack([v[layer] for v, _ in vectors.values()]))
        rows += _matrix_rows("behaviors", names, behavior_matrix, behavior="", layer=layer)
        payload["across_behaviors"] = {"layer": layer, "matrix": behavior_matrix.tolist()}
    model_cos: dict[str, list[float]] = {}
    for name, (vector, _) in compared.items():
        mine = vectors[name][0]
        model_cos[name] = [
            float(cosine_matrix(torch.stack([mine[x], vector[x]]))[0, 1]) for x in layers
        ]
        rows += [
            {"view": "models", "behavior": name, "layer": x, "row": ref.model_id,
             "column": other.model_id if other else "", "cosine": round(c, 6)}
            for x, c in zip(layers, model_cos[name], strict=True)
        ]  # fmt: skip
    if other is not None:
        payload["across_models"] = {"compare_model": other.model_id, "cosine": model_cos}
    meta = provenance(
        ref,
        compare_model=None
        if other is None
        else {"model_id": other.model_id, "weights_fingerprint": other.weights_fingerprint},
        vectors={b: vector_record(v, p, layers) for b, (v, p) in vectors.items()},
        compared_vectors={b: vector_record(v, p, layers) for b, (v, p) in compared.items()},
    )
    with writing_run(folder, force=job.force) as tmp:
        written = [
            write_json(tmp / "similarity.json", {**meta, **payload}),
            write_csv_rows(tmp / "similarity.csv", rows),
            plot_heatmaps(heat, tmp / "layers.png", "cosine across layers", axis="layer"),
        ]
        if behavior_matrix is not None:
            title = f"cosine across behaviors at layer {layer}"
            written.append(
                plot_heatmaps({"": (names, behavior_matrix)}, tmp / "behaviors.png", title)
            )
        if other is not None:
            written.append(
                plot_model_cosines(layers, model_cos, tmp / "models.png", ref.model_id,
                                   other.model_id)
            )  # fmt: skip
    summary = [_decay_line(name, layers, m) for name, (_, m) in heat.items()]
    return AnalysisRun(folder, [folder / p.name for p in written], summary)


def _decay_line(name: str, layers: list[int], matrix: torch.Tensor) -> str:
    """Mean cosine of layers one apart and of the farthest-apart layers."""
    if len(layers) < 2:
        return f"{name}: one layer"
    near = torch.diagonal(matrix, offset=1).mean()
    return (
        f"{name}: cos(neighbouring layers) {float(near):.3f}, "
        f"cos(L{layers[0]}, L{layers[-1]}) {float(matrix[0, -1]):.3f}"
    )
