"""``caa-bake analyze pca``: how the contrast activations separate, layer by layer.

For each behavior and layer, the kept per-pair activations (``extract --keep-activations``:
the block output at the answer letter, both sides of every pair) are projected on their
first two principal components and plotted twice: coloured by side (matching / not
matching the behavior) and by the answer letter the activation was read at (A / B), which
exposes letter bias. With two behaviors or more, the per-pair differences (matching -
non-matching) of all of them are projected together, coloured by behavior.

Each layer also gets a **separation** score per colouring: the distance between the two
groups' centroids in the PCA plane divided by their mean within-group spread (root mean
squared distance to the own centroid). It is large when the groups form distinct clusters.
As the answer letter usually dominates the plane, the sides' separation is also measured
inside each letter's cluster (``side_separation_within_letter``), and ``vector_agreement``
is the share of pairs whose own difference points along the layer's vector (in sample).
``letter_cosine`` is the cosine of the layer's vector with the letter direction (mean
activation read at ``A`` minus at ``B``): a vector is ``behavior + (share_A - share_B) x
letter direction`` when the matching letter is unbalanced (``matching_a_share``), and a
large letter direction makes even a small imbalance visible.

``--center-letters`` subtracts each answer letter's mean activation (per behavior and layer)
before the PCA: the letter token's own offset goes, the matching / non-matching difference
stays (both letters' means average over matching and non-matching answers).

Sign rule: each principal component is flipped so that its largest-magnitude loading is
positive (deterministic output; the figures would otherwise mirror at random).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig

from caa_bake.analysis.figures import plot_pca
from caa_bake.analysis.run import (
    AnalysisRun,
    check_layers_in,
    provenance,
    resolve_behaviors,
    run_target,
    write_csv_rows,
    write_json,
    writing_run,
)
from caa_bake.core import CaaBakeError, file_sha256, progress
from caa_bake.models import ModelRef, num_layers, resolve_model
from caa_bake.steering import ActivationSet, activations_path, parse_layers

__all__ = [
    "Pca2",
    "PcaJob",
    "letter_cosine",
    "pca2",
    "run_pca_job",
    "separation",
    "vector_agreement",
]

SIDE_COLOURS = {"matching": "tab:blue", "not matching": "tab:red"}
LETTER_COLOURS = {"A": "tab:green", "B": "tab:purple", "?": "tab:gray"}
_OTHER = {"A": "B", "B": "A"}


@dataclass(frozen=True)
class Pca2:
    """The first two principal components of a point cloud."""

    coords: torch.Tensor  # [N, 2] float64
    components: torch.Tensor  # [2, hidden] float64, unit rows
    mean: torch.Tensor  # [hidden] float64
    explained: tuple[float, float]  # share of the total variance


def pca2(points: torch.Tensor) -> Pca2:
    """PCA of ``points`` (``[N, hidden]``, N >= 2) onto two sign-normalized components."""
    if points.ndim != 2 or points.shape[0] < 2:
        raise CaaBakeError("PCA needs at least two points")
    x = points.double()
    mean = x.mean(dim=0)
    centred = x - mean
    _u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    comps = torch.zeros(2, x.shape[1], dtype=torch.float64)
    k = min(2, vh.shape[0])
    comps[:k] = vh[:k]
    for i in range(k):
        if comps[i, int(comps[i].abs().argmax())] < 0:
            comps[i] = -comps[i]
    variance = s.square()
    total = float(variance.sum())
    shares = [float(variance[i]) / total if total > 0 and i < k else 0.0 for i in range(2)]
    return Pca2(centred @ comps.T, comps, mean, (shares[0], shares[1]))


def separation(coords: torch.Tensor, labels: Sequence[str], a: str, b: str) -> float:
    """Centroid distance of groups ``a`` and ``b`` over their mean RMS within-group spread."""
    groups = []
    for value in (a, b):
        mask = torch.tensor([label == value for label in labels])
        if not bool(mask.any()):
            return float("nan")
        groups.append(coords[mask])
    centres = [g.mean(dim=0) for g in groups]
    spread = [
        float((g - c).square().sum(dim=1).mean().sqrt())
        for g, c in zip(groups, centres, strict=True)
    ]
    within = sum(spread) / 2
    distance = float((centres[0] - centres[1]).norm())
    return distance / within if within > 0 else float("inf")


def _within_letter(coords: torch.Tensor, sides: Sequence[str], letters: Sequence[str]) -> float:
    """Side separation inside each letter's cluster, averaged over the letters A and B."""
    values = []
    for letter in ("A", "B"):
        mask = torch.tensor([x == letter for x in letters])
        mine = [s for s, keep in zip(sides, mask.tolist(), strict=True) if keep]
        if mine:
            values.append(separation(coords[mask], mine, *SIDE_COLOURS))
    return sum(values) / len(values) if values else float("nan")


def _centered(points: torch.Tensor, letters: Sequence[str]) -> torch.Tensor:
    """``points`` with the mean of their letter's group subtracted (``--center-letters``):
    removes what the answer token's identity alone adds, keeps the side differences."""
    out = points.double().clone()
    for letter in set(letters):
        mask = torch.tensor([x == letter for x in letters])
        out[mask] -= out[mask].mean(dim=0)
    return out


def letter_cosine(acts: torch.Tensor, letters: Sequence[str]) -> float:
    """Cosine of the layer's vector (mean difference of ``[pairs, 2, hidden]``) with the letter
    direction: mean activation read at ``A`` minus mean read at ``B`` (both sides pooled)."""
    flat = acts.reshape(-1, acts.shape[-1]).double()
    mask_a = torch.tensor([x == "A" for x in letters])
    mask_b = torch.tensor([x == "B" for x in letters])
    if not bool(mask_a.any()) or not bool(mask_b.any()):
        return float("nan")
    letter = flat[mask_a].mean(dim=0) - flat[mask_b].mean(dim=0)
    vector = (acts[:, 0] - acts[:, 1]).double().mean(dim=0)
    denom = float(letter.norm() * vector.norm())
    return float(letter @ vector) / denom if denom > 0 else float("nan")


def vector_agreement(acts: torch.Tensor) -> float:
    """Share of pairs (``[pairs, 2, hidden]``) whose own difference (matching - not
    matching) has a positive dot product with the mean difference, the layer's vector."""
    diffs = (acts[:, 0] - acts[:, 1]).double()
    return float((diffs @ diffs.mean(dim=0) > 0).double().mean())


@dataclass(frozen=True)
class PcaJob:
    """What ``caa-bake analyze pca`` was asked to do."""

    behaviors: list[str]
    layers: str | None = None  # None: up to 8 of the kept layers, evenly spaced
    center_letters: bool = False
    model: str | None = None
    run: str | None = None
    force: bool = False


def _load(ref: ModelRef, behavior: str, layers_hint: str) -> ActivationSet:
    path = activations_path(ref.slug, behavior)
    fix = (
        f"run `caa-bake extract --behavior {behavior} --layers {layers_hint} "
        "--keep-activations` first"
    )
    if not path.is_file():
        raise CaaBakeError(
            f"no kept activations of '{behavior}' for model {ref.model_id} ({path}); {fix}"
        )
    kept = ActivationSet.load(path)
    if kept.metadata.get("weights_fingerprint") != ref.weights_fingerprint:
        raise CaaBakeError(f"{path} was extracted from other weights than {ref.model_id}'s; {fix}")
    return kept


def _default_layers(have: list[int]) -> list[int]:
    if len(have) <= 8:
        return have
    picks = {have[round(i * (len(have) - 1) / 7)] for i in range(8)}
    return sorted(picks)


def run_pca_job(job: PcaJob, *, status: Callable[[str], None]) -> AnalysisRun:
    """Validate everything, project, write ``pca.*`` and one figure per behavior."""
    ref = resolve_model(job.model)
    names = resolve_behaviors(job.behaviors, lambda b: activations_path(ref.slug, b).is_file())
    folder = run_target(job.run, "pca", ref.slug, force=job.force)
    kept = {b: _load(ref, b, job.layers or "all") for b in names}
    common = sorted(set.intersection(*(set(k.layer_ids) for k in kept.values())))
    if job.layers is None:
        if not common:
            raise CaaBakeError("the kept activations share no layer; keep the same layers")
        layers = _default_layers(common)
    else:
        layers = parse_layers(job.layers, num_layers(AutoConfig.from_pretrained(ref.path)))
        for name, acts in kept.items():
            fix = (
                f"run `caa-bake extract --behavior {name} --layers {job.layers} --keep-activations`"
            )
            check_layers_in(f"the kept activations of '{name}'", acts.layer_ids, layers, fix)
    status(f"model {ref.model_id}; {len(names)} behavior(s); layers {layers}; results in {folder}")
    points: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    figures: list[tuple[str, list[tuple[str, torch.Tensor, list[str], tuple[float, float]]]]] = []
    flat: dict[str, dict[int, torch.Tensor]] = {}
    for name, acts in progress(kept.items(), desc="pca", total=len(kept), unit="behavior"):
        sides = ["matching", "not matching"] * acts.num_pairs
        letters = [x for m in acts.letters for x in (m, _OTHER.get(m, "?"))]
        cloud = {
            layer: _centered(acts[layer].reshape(2 * acts.num_pairs, -1), letters)
            if job.center_letters
            else acts[layer].reshape(2 * acts.num_pairs, -1)
            for layer in layers
        }
        flat[name] = cloud
        labels = [f"{s}|{x}" for s, x in zip(sides, letters, strict=True)]
        panels = []
        for layer in layers:
            result = pca2(cloud[layer])
            panels.append((f"L{layer}", result.coords, labels, result.explained))
            scores.append(
                {
                    "behavior": name,
                    "layer": layer,
                    "pc1_variance": round(result.explained[0], 6),
                    "pc2_variance": round(result.explained[1], 6),
                    "side_separation": round(separation(result.coords, sides, *SIDE_COLOURS), 6),
                    "side_separation_within_letter": round(
                        _within_letter(result.coords, sides, letters), 6
                    ),
                    "letter_separation": round(separation(result.coords, letters, "A", "B"), 6),
                    "vector_agreement": round(vector_agreement(acts[layer]), 6),
                    "matching_a_share": round(acts.letters.count("A") / acts.num_pairs, 6),
                    "letter_cosine": round(letter_cosine(acts[layer], letters), 6),
                }
            )
            points += [
                {"behavior": name, "layer": layer, "pair": i // 2, "side": sides[i],
                 "letter": letters[i], "pc1": round(float(xy[0]), 6),
                 "pc2": round(float(xy[1]), 6)}
                for i, xy in enumerate(result.coords)
            ]  # fmt: skip
        figures.append((name, panels))
    diff_panels = []
    if len(names) > 1:
        for layer in layers:
            diffs = [flat[n][layer][0::2] - flat[n][layer][1::2] for n in names]
            owners = [n for n, d in zip(names, diffs, strict=True) for _ in range(d.shape[0])]
            result = pca2(torch.cat(diffs))
            diff_panels.append((f"L{layer}", result.coords, owners, result.explained))
    meta = provenance(
        ref,
        layers=layers,
        activations={
            b: {
                "file": str(activations_path(ref.slug, b)),
                "file_sha256": file_sha256(activations_path(ref.slug, b)),
                "num_pairs": a.num_pairs,
                "dataset_sha256": a.metadata.get("dataset_sha256"),
                "dtype": a.metadata.get("dtype"),
            }
            for b, a in kept.items()
        },
        sign_rule="each component's largest-magnitude loading is positive",
        letters_centered=job.center_letters,
    )
    with writing_run(folder, force=job.force) as tmp:
        written = [
            write_json(tmp / "pca.json", {**meta, "scores": scores}),
            write_csv_rows(tmp / "pca.csv", points),
            write_csv_rows(tmp / "pca_scores.csv", scores),
        ]
        rows = [("side", SIDE_COLOURS), ("letter", LETTER_COLOURS)]
        for name, panels in figures:
            title = f"{name}: answer-letter activations on their first two principal components"
            if job.center_letters:
                title += " (each letter's mean removed)"
            written.append(plot_pca(panels, tmp / f"pca-{name}.png", title, rows=rows))
        if diff_panels:
            colours = {n: f"C{i}" for i, n in enumerate(names)}
            title = "per-pair differences (matching - not matching) of every behavior"
            written.append(
                plot_pca(
                    diff_panels, tmp / "pca-behaviors.png", title, rows=[("behavior", colours)]
                )
            )
    summary = [
        f"{s['behavior']} L{s['layer']}: side separation {s['side_separation']:.2f} "
        f"({s['side_separation_within_letter']:.2f} within a letter), letter separation "
        f"{s['letter_separation']:.2f}, vector agreement {s['vector_agreement']:.2f}"
        for s in scores
    ]
    return AnalysisRun(folder, [folder / p.name for p in written], summary)
