"""Steering vectors: extraction, the vector file and its cache, layer selections, run-time hooks.

The public face of ``caa_bake.steering``: other subpackages and the CLI import these names
from ``caa_bake.steering``; its modules are internal to it. Names load on first use
(PEP 562), so importing the face costs no more than importing what is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caa_bake.core import lazy_exports

if TYPE_CHECKING:
    from caa_bake.steering.activations import (
        ActivationSet,
        activations_path,
        answer_letter,
    )
    from caa_bake.steering.cache import (
        BehaviorData,
        ModelLoader,
        extract_behavior,
        get_vector,
        normalization_members,
        normalized_set,
    )
    from caa_bake.steering.extract import (
        POSITION_RULE,
        ExtractionResult,
        block_outputs_at,
        cache_kwargs,
        extract_vectors,
    )
    from caa_bake.steering.hooks import (
        add_to_block_outputs,
        steering,
    )
    from caa_bake.steering.job import (
        ExtractJob,
        pick_device,
        run_extract_job,
    )
    from caa_bake.steering.layers import (
        check_layer,
        parse_layers,
    )
    from caa_bake.steering.vector import (
        SteeringVector,
        normalize_to_set,
        normalize_vectors,
        vector_path,
    )

__all__ = [
    "POSITION_RULE",
    "ActivationSet",
    "BehaviorData",
    "ExtractJob",
    "ExtractionResult",
    "ModelLoader",
    "SteeringVector",
    "activations_path",
    "add_to_block_outputs",
    "answer_letter",
    "block_outputs_at",
    "cache_kwargs",
    "check_layer",
    "extract_behavior",
    "extract_vectors",
    "get_vector",
    "normalization_members",
    "normalize_to_set",
    "normalize_vectors",
    "normalized_set",
    "parse_layers",
    "pick_device",
    "run_extract_job",
    "steering",
    "vector_path",
]

_SOURCES = {
    "ActivationSet": "activations",
    "activations_path": "activations",
    "answer_letter": "activations",
    "BehaviorData": "cache",
    "ExtractJob": "job",
    "ExtractionResult": "extract",
    "ModelLoader": "cache",
    "POSITION_RULE": "extract",
    "SteeringVector": "vector",
    "add_to_block_outputs": "hooks",
    "block_outputs_at": "extract",
    "cache_kwargs": "extract",
    "check_layer": "layers",
    "extract_behavior": "cache",
    "extract_vectors": "extract",
    "get_vector": "cache",
    "normalization_members": "cache",
    "normalize_to_set": "vector",
    "normalize_vectors": "vector",
    "normalized_set": "cache",
    "parse_layers": "layers",
    "pick_device": "job",
    "run_extract_job": "job",
    "steering": "hooks",
    "vector_path": "vector",
}

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals(), __all__)
