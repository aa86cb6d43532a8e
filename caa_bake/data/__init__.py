"""The contrast pairs and A/B evaluation sets: behaviors, the pinned manifest, pull, loading.

The public face of ``caa_bake.data``: other subpackages and the CLI import these names
from ``caa_bake.data``; its modules are internal to it. Names load on first use
(PEP 562), so importing the face costs no more than importing what is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caa_bake.core import lazy_exports

if TYPE_CHECKING:
    from caa_bake.data.anthropic_raw import (
        SEED,
        TEST_SIZE,
        ConvertedBehavior,
        convert_file,
        convert_item,
        convert_jsonl,
        dump_items,
    )
    from caa_bake.data.behaviors import (
        AB_EVALS,
        ANTHROPIC_BEHAVIORS,
        ANTHROPIC_PREFIX,
        ANTHROPIC_RAW_NAMES,
        CAA_BEHAVIORS,
        all_behaviors,
        anthropic_raw_name,
        check_behavior,
        is_anthropic,
    )
    from caa_bake.data.datasets import (
        SPLITS,
        ABItem,
        ContrastPair,
        DatasetStatus,
        ab_eval_path,
        anthropic_converted_paths,
        anthropic_raw_path,
        dataset_path,
        file_sha256,
        inventory,
        load_ab_eval,
        load_custom_pairs,
        load_open_ended,
        load_pairs,
    )
    from caa_bake.data.download import (
        DEFAULT_TIMEOUT_S,
        SOURCE_ENV,
        DataSource,
        PullReport,
        pull,
        resolve_source,
    )
    from caa_bake.data.manifest import (
        ManifestEntry,
        load_manifest,
        manifest_path,
    )

__all__ = [
    "AB_EVALS",
    "ANTHROPIC_BEHAVIORS",
    "ANTHROPIC_PREFIX",
    "ANTHROPIC_RAW_NAMES",
    "CAA_BEHAVIORS",
    "DEFAULT_TIMEOUT_S",
    "SEED",
    "SOURCE_ENV",
    "SPLITS",
    "TEST_SIZE",
    "ABItem",
    "ContrastPair",
    "ConvertedBehavior",
    "DataSource",
    "DatasetStatus",
    "ManifestEntry",
    "PullReport",
    "ab_eval_path",
    "all_behaviors",
    "anthropic_converted_paths",
    "anthropic_raw_name",
    "anthropic_raw_path",
    "check_behavior",
    "convert_file",
    "convert_item",
    "convert_jsonl",
    "dataset_path",
    "dump_items",
    "file_sha256",
    "inventory",
    "is_anthropic",
    "load_ab_eval",
    "load_custom_pairs",
    "load_manifest",
    "load_open_ended",
    "load_pairs",
    "manifest_path",
    "pull",
    "resolve_source",
]

_SOURCES = {
    "ABItem": "datasets",
    "AB_EVALS": "behaviors",
    "ANTHROPIC_BEHAVIORS": "behaviors",
    "ANTHROPIC_PREFIX": "behaviors",
    "ANTHROPIC_RAW_NAMES": "behaviors",
    "CAA_BEHAVIORS": "behaviors",
    "ContrastPair": "datasets",
    "ConvertedBehavior": "anthropic_raw",
    "DEFAULT_TIMEOUT_S": "download",
    "DataSource": "download",
    "DatasetStatus": "datasets",
    "ManifestEntry": "manifest",
    "PullReport": "download",
    "SEED": "anthropic_raw",
    "SOURCE_ENV": "download",
    "SPLITS": "datasets",
    "TEST_SIZE": "anthropic_raw",
    "ab_eval_path": "datasets",
    "all_behaviors": "behaviors",
    "anthropic_converted_paths": "datasets",
    "anthropic_raw_name": "behaviors",
    "anthropic_raw_path": "datasets",
    "check_behavior": "behaviors",
    "convert_file": "anthropic_raw",
    "convert_item": "anthropic_raw",
    "convert_jsonl": "anthropic_raw",
    "dataset_path": "datasets",
    "dump_items": "anthropic_raw",
    "file_sha256": "datasets",
    "inventory": "datasets",
    "is_anthropic": "behaviors",
    "load_ab_eval": "datasets",
    "load_custom_pairs": "datasets",
    "load_manifest": "manifest",
    "load_open_ended": "datasets",
    "load_pairs": "datasets",
    "manifest_path": "manifest",
    "pull": "download",
    "resolve_source": "download",
}

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals(), __all__)
