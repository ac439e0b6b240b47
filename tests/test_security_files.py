"""Hostile or broken files: GGUF headers that lie, model folders that cannot load, pickle checkpoints, card
PNGs and JSON that explode, Modelfiles and YAML bombs. Each gives its parser's own clear error, quickly and
without allocating what the file claims; through the real server a bad model is refused, the server keeps
serving, and the model loaded before stays loaded and answers.
"""

from __future__ import annotations

import base64
import json
import pickle
import re
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from gguf import GGUFWriter

from tests.support import hostile_files as hostile
from tests.support.servers import Server
from webui.config import PROJECT_ROOT
from webui.core.characters import cards
from webui.core.characters.modelfile import ModelfileError, import_fields, parse_modelfile
from webui.core.characters.store import CharacterError, CharacterStore
from webui.core.characters.store import _check_param as check_param
from webui.core.characters.store import _field_types as field_types
from webui.core.loader import LoaderError
from webui.core.models.discovery import (
    ModelEntry,
    ModelFileError,
    folder_metadata,
    gguf_metadata,
    infer_loader,
)
from webui.core.models.gguf_header import GGUFHeaderError, read_gguf_header, read_gguf_tensors
from webui.core.presets import PresetError, PresetStore
from webui.core.safe_load import UnsafeDocumentError, load_json, load_yaml
from webui.core.templates.store import TemplateError, TemplateStore
from webui.provision import DEFAULT_MODEL_FILE

MB = 1024 * 1024


def assert_refused_cheaply(run: Callable[[], object], error: type[Exception], match: str) -> None:
    """``run`` raises ``error`` (message matching ``match``) without allocating more than a few MB."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match):
            run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, f"allocated {peak / MB:.0f} MB"


# -- GGUF headers --------------------------------------------------------------------------------------------

U32, I32, STR, ARR = 4, 5, 8, 9


def kv_array(key: str, item_type: int, claimed: int, payload: bytes = b"") -> bytes:
    return hostile.gguf_string(key) + struct.pack("<IIQ", ARR, item_type, claimed) + payload


HOSTILE_HEADERS: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "too small"),
    "bad magic": (hostile.gguf_bytes([], magic=b"GGML") + b"\0" * 32, "wrong magic"),
    "a PNG named .gguf": (cards.placeholder_png("x") + b"\0" * 32, "wrong magic"),
    "version 99": (hostile.gguf_bytes([], version=99) + b"\0" * 32, "unsupported GGUF version 99"),
    "10^12 entries": (b"GGUF" + struct.pack("<IQQ", 3, 0, 10**12) + b"\0" * 64, "claims 1000000000000"),
    "array of 10^9 ints": (
        hostile.gguf_bytes([kv_array("tokenizer.ggml.scores", I32, 10**9)]) + b"\0" * 64,
        "claims 1000000000 items",
    ),
    "array of 2^63 strings": (
        hostile.gguf_bytes([kv_array("tokenizer.ggml.tokens", STR, 2**63)]) + b"\0" * 64,
        "more than the file holds",
    ),
    "array of 10^5 strings in a small file": (
        hostile.gguf_bytes([kv_array("tokenizer.ggml.tokens", STR, 100_000)]) + b"\0" * 200_000,
        "truncated",
    ),
    "string of 2^60 bytes": (
        hostile.gguf_bytes([hostile.gguf_string("general.name") + struct.pack("<IQ", STR, 2**60)]),
        "not plausible",
    ),
    "key of 2^40 bytes": (hostile.gguf_bytes([struct.pack("<Q", 2**40) + b"k" * 32]), "not plausible"),
    "string longer than the file": (
        hostile.gguf_bytes([hostile.gguf_string("general.name") + struct.pack("<IQ", STR, 10**6) + b"x"]),
        "truncated",
    ),
    "unknown value type": (
        hostile.gguf_bytes([hostile.gguf_string("general.name") + struct.pack("<I", 77) + b"\0" * 16]),
        "unknown metadata value type 77",
    ),
    "arrays nested deeply": (
        hostile.gguf_bytes(
            [hostile.gguf_string("x") + struct.pack("<I", ARR) + struct.pack("<IQ", ARR, 1) * 8]
        )
        + b"\0" * 64,
        "nested too deeply",
    ),
    "header cut in a key": (
        hostile.gguf_bytes([hostile.gguf_kv_string("general.name", "x")])[:30],
        "truncated",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_hostile_gguf_header_is_refused_quickly_without_allocating(tmp_path: Path, case: str) -> None:
    raw, match = HOSTILE_HEADERS[case]
    path = tmp_path / "hostile.gguf"
    path.write_bytes(raw)
    assert_refused_cheaply(lambda: read_gguf_header(path), GGUFHeaderError, match)
    assert_refused_cheaply(lambda: gguf_metadata(path), ModelFileError, "hostile.gguf")


def test_absurd_tensor_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensors.gguf"
    path.write_bytes(hostile.gguf_bytes([], tensor_count=10**9) + b"\0" * 64)
    assert_refused_cheaply(lambda: read_gguf_tensors(path), GGUFHeaderError, "claims 1000000000 tensors")
    dims = hostile.gguf_string("t") + struct.pack("<I", 1000) + b"\0" * 64
    path.write_bytes(hostile.gguf_bytes([], tensor_count=1) + dims)
    assert_refused_cheaply(lambda: read_gguf_tensors(path), GGUFHeaderError, "claims 1000 dimensions")


def test_real_gguf_cut_anywhere_in_its_header_is_refused(tmp_path: Path, default_model_path: Path) -> None:
    with default_model_path.open("rb") as handle:
        head = handle.read(4 * MB)
    path = tmp_path / "cut.gguf"
    for size in (24, 25, 100, 1000, 10_000, 100_000, 1_000_000, 1_700_000):  # its metadata ends at 1.77 MB
        path.write_bytes(head[:size])
        with pytest.raises(GGUFHeaderError, match=r"truncated|more than the file holds"):
            read_gguf_header(path)


def test_metadata_of_the_wrong_types_is_ignored_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "types.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_uint32("general.name", 7)  # a number where text belongs
    writer.add_string("llama.context_length", "4096")  # text where a number belongs
    writer.add_array("tokenizer.chat_template", ["{{ a }}", "{{ b }}"])  # a list where text belongs
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    metadata = gguf_metadata(path)
    assert (metadata.display_name, metadata.context_length, metadata.chat_template) == (None, None, None)
    assert metadata.architecture == "llama"


# -- model folders and pickle checkpoints --------------------------------------------------------------------


class Boom:
    """Unpickling this would run a command: the canary of a pickle checkpoint that was opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def model_folder(root: Path, name: str, config: str, weights: dict[str, bytes]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(config)
    for file_name, content in weights.items():
        (folder / file_name).write_bytes(content)
    return folder


LLAMA_CONFIG = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})


def test_pickle_only_folder_is_refused_by_default_naming_the_setting(tmp_path: Path) -> None:
    from loaders.awq import AwqLoader
    from loaders.gptq import GptqLoader
    from loaders.transformers import TransformersLoader

    marker = tmp_path / "pwned"
    evil = pickle.dumps(Boom(marker))
    quantized = {
        "gptq": json.dumps({"model_type": "llama", "quantization_config": {"quant_method": "gptq"}}),
        "awq": json.dumps({"model_type": "llama", "quantization_config": {"quant_method": "awq"}}),
    }
    cases = [
        (TransformersLoader(), model_folder(tmp_path, "plain", LLAMA_CONFIG, {"pytorch_model.bin": evil})),
        (
            TransformersLoader(),
            model_folder(tmp_path, "pt", LLAMA_CONFIG, {"model.pt": evil, "x.ckpt": evil}),
        ),
        (GptqLoader(), model_folder(tmp_path, "gptq", quantized["gptq"], {"pytorch_model.bin": evil})),
        (AwqLoader(), model_folder(tmp_path, "awq", quantized["awq"], {"model.pth": evil})),
    ]
    for loader, folder in cases:
        assert infer_loader(ModelEntry(folder.name, folder, "folder", 1)) == loader.name
        settings = loader.settings_model()
        with pytest.raises(LoaderError, match="allow_pickle=true") as caught:
            loader.load(folder, settings)
        assert "pickle" in str(caught.value) and folder.name in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ("{not json", "config.json cannot be read"),
        ("[" * 100_000 + "]" * 100_000, "config.json cannot be read"),
        ('{"n": ' + "9" * 5000 + "}", "config.json cannot be read"),
    ],
)
def test_broken_config_json_is_a_clear_error(tmp_path: Path, config: str, match: str) -> None:
    folder = model_folder(tmp_path, "broken", config, {"model.safetensors": b"\0" * 16})
    with pytest.raises(ModelFileError, match=match):
        folder_metadata(folder)
    with pytest.raises(ModelFileError, match=match):
        infer_loader(ModelEntry("broken", folder, "folder", 1))


# -- character cards -----------------------------------------------------------------------------------------


def png_with(*chunks: tuple[bytes, bytes]) -> bytes:
    base = cards.png_chunks(cards.placeholder_png("x"))
    return cards.build_png([base[0], *chunks, *base[1:]])


def text_chunk(keyword: bytes, text: bytes) -> tuple[bytes, bytes]:
    return b"tEXt", keyword + b"\0" + text


def b64(obj: object) -> bytes:
    return base64.b64encode(json.dumps(obj).encode())


CARD_CASES: dict[str, tuple[bytes, str]] = {
    "not a PNG": (b"GIF89a" + b"\0" * 64, "not a PNG"),
    "truncated PNG": (cards.placeholder_png("x")[:40], "truncated"),
    "bad checksum": (cards.placeholder_png("x")[:-5] + b"\0" * 5, "damaged|truncated"),
    "no card chunk": (cards.placeholder_png("x"), "holds no character card"),
    "bad base64": (png_with(text_chunk(b"chara", b"!!!not base64!!!")), "not valid base64"),
    "base64 of binary": (png_with(text_chunk(b"chara", base64.b64encode(b"\xff\xfe\x00"))), "not UTF-8"),
    "base64 of non-JSON": (png_with(text_chunk(b"chara", base64.b64encode(b"{nope"))), "not valid JSON"),
    "JSON nested 100k deep": (
        png_with(text_chunk(b"chara", base64.b64encode(b"[" * 100_000 + b"]" * 100_000))),
        "not valid JSON",
    ),
    "a 5000-digit number": (
        png_with(text_chunk(b"chara", base64.b64encode(b'{"name": ' + b"9" * 5000 + b"}"))),
        "not valid JSON",
    ),
    "JSON list, not a card": (png_with(text_chunk(b"chara", b64([1, 2, 3]))), "must be a JSON object"),
    "card without a name": (
        png_with(text_chunk(b"chara", b64({"spec": "chara_card_v2", "data": {}}))),
        "no name",
    ),
    "unknown spec": (
        png_with(text_chunk(b"chara", b64({"spec": "evil", "data": {}}))),
        "Unsupported card spec",
    ),
    "huge tEXt chunk": (png_with(text_chunk(b"chara", b"A" * (21 * MB))), "larger than 20 MB"),
    "zTXt bomb": (
        png_with((b"zTXt", b"chara\0\0" + zlib.compress(b"A" * (64 * MB), 9))),
        "expands beyond the size limit|holds no character card",
    ),
    "chunk claiming 2 GB": (
        cards.PNG_SIGNATURE + struct.pack(">I", 2**31 - 1) + b"tEXt" + b"x" * 64,
        "truncated",
    ),
}


@pytest.mark.parametrize("case", sorted(CARD_CASES))
def test_hostile_card_png_gives_a_card_error(case: str) -> None:
    raw, match = CARD_CASES[case]
    with pytest.raises(cards.CardError, match=match):
        cards.read_card_png(raw)


def test_hostile_card_files_are_refused_on_import(tmp_path: Path) -> None:
    templates = TemplateStore(PROJECT_ROOT / "instruction-templates", tmp_path / "templates")
    store = CharacterStore(PROJECT_ROOT / "characters", tmp_path / "characters", templates)
    for number, (raw, _) in enumerate(CARD_CASES.values()):
        suffix = ".png" if raw.startswith(cards.PNG_SIGNATURE) else ".json"
        path = tmp_path / f"card{number}{suffix}"
        path.write_bytes(raw)
        with pytest.raises(CharacterError, match=f"card{number}"):
            store.import_file(path)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (21 * MB))
    with pytest.raises(CharacterError, match="larger than 20 MB"):
        store.import_file(big)
    assert not store.user_dir.exists() or not any(store.user_dir.iterdir())


# -- Modelfiles ----------------------------------------------------------------------------------------------

MODELFILES = {
    "no FROM": ("SYSTEM hi\n", "no FROM line"),
    "FROM without a name": ("FROM\n", "FROM needs a model name"),
    "unclosed triple quote": ('FROM x\nSYSTEM """never closed\n' + "line\n" * 50_000, "Modelfile"),
    "bad PARAMETER": ("FROM x\nPARAMETER temperature\n", "expected 'PARAMETER <name> <value>'"),
    "unknown instruction": ("FROM x\nEXPLODE now\n", "Modelfile"),
    "binary junk": ("FROM x\n\0\0\0\xff\n", "Modelfile"),
}


@pytest.mark.parametrize("case", sorted(MODELFILES))
def test_malformed_modelfile_gives_a_modelfile_error(case: str) -> None:
    text, match = MODELFILES[case]
    with pytest.raises(ModelfileError, match=match):
        parse_modelfile(text)


def test_modelfile_with_impossible_parameters_is_refused() -> None:
    for line in (
        "PARAMETER temperature hot",
        "PARAMETER num_ctx 1e999",
        "PARAMETER top_k -5",
        "PARAMETER evil 1",
    ):
        with pytest.raises(ModelfileError):
            import_fields(f"FROM x\n{line}\n", field_types(), check_param)


# -- YAML bombs and broken YAML ------------------------------------------------------------------------------

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)
)
YAML_CASES = {
    "billion laughs": BILLION_LAUGHS,
    "recursive alias": "temperature: &a [*a]\nname: &b {x: *b}\n",
    "deep nesting": "x: " + "[" * 10_000 + "]" * 10_000,
    "5000-digit number": "temperature: " + "9" * 5000,
    "not YAML": "a: [unclosed\n  b: {{\n",
    "tabs and junk": "\t- : : :\n\0",
}


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[PresetStore, TemplateStore, CharacterStore]]:
    templates = TemplateStore(PROJECT_ROOT / "instruction-templates", tmp_path / "templates")
    presets = PresetStore(PROJECT_ROOT / "presets", tmp_path / "presets")
    characters = CharacterStore(PROJECT_ROOT / "characters", tmp_path / "characters", templates)
    for folder in (templates.user_dir, presets.user_dir, characters.user_dir):
        folder.mkdir()
    yield presets, templates, characters


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_yaml_bombs_and_broken_yaml_give_each_store_its_own_error(
    stores: tuple[PresetStore, TemplateStore, CharacterStore], tmp_path: Path, case: str
) -> None:
    presets, templates, characters = stores
    text = YAML_CASES[case]
    (presets.user_dir / "bomb.yaml").write_text(text, encoding="utf-8")
    (templates.user_dir / "bomb.yaml").write_text(text, encoding="utf-8")
    (characters.user_dir / "bomb.yaml").write_text(text, encoding="utf-8")
    assert_refused_cheaply(lambda: presets.load("bomb"), PresetError, "bomb")
    assert_refused_cheaply(lambda: templates.get("bomb"), TemplateError, "bomb")
    assert_refused_cheaply(lambda: characters.load("bomb"), CharacterError, "bomb")
    upload = tmp_path / "upload.yaml"
    upload.write_text(text, encoding="utf-8")
    assert_refused_cheaply(lambda: characters.import_file(upload), CharacterError, "upload")
    assert "Default" in presets.names()  # one broken file does not hide the others


def test_safe_load_keeps_ordinary_documents_and_refuses_bombs() -> None:
    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}  # a few aliases are fine
    assert load_yaml("") is None
    assert load_json('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    for text in (BILLION_LAUGHS, "a: &a [*a]"):
        with pytest.raises(UnsafeDocumentError):
            load_yaml(text)
    with pytest.raises(ValueError, match="nests too deeply"):
        load_json("[" * 100_000 + "]" * 100_000)


# -- through the real server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile-files")
    server = Server(root, model=default_model_path)
    models = server.config.models_dir
    with default_model_path.open("rb") as handle:
        (models / "truncated.gguf").write_bytes(handle.read(3 * MB))
    for case in ("bad magic", "array of 10^9 ints", "string of 2^60 bytes", "10^12 entries"):
        name = case.replace(" ", "-").replace("^", "") + ".gguf"
        (models / name).write_bytes(HOSTILE_HEADERS[case][0] + b"\0" * 64)
    writer = GGUFWriter(models / "no-tensors.gguf", "llama")
    writer.add_chat_template("{{ messages }}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    weights = {"model.safetensors": b"\0" * 16}
    model_folder(models, "not-json", "{nope", weights)
    unknown = json.dumps({"model_type": "florp9000", "architectures": ["FlorpForCausalLM"]})
    model_folder(models, "unknown-architecture", unknown, weights)
    model_folder(
        models, "pickle-only", LLAMA_CONFIG, {"pytorch_model.bin": pickle.dumps(Boom(root / "pwned"))}
    )
    server.start()
    yield server
    server.stop()
    assert not (root / "pwned").exists()


HOSTILE_MODELS = {
    "truncated.gguf": "truncated|could not load",
    "bad-magic.gguf": "wrong magic",
    "array-of-109-ints.gguf": "claims 1000000000 items",
    "string-of-260-bytes.gguf": "not plausible",
    "1012-entries.gguf": "claims 1000000000000",
    "no-tensors.gguf": "could not load",
    "not-json": "config.json cannot be read",
    "unknown-architecture": "florp9000",
    "pickle-only": "allow_pickle=true",
}


@pytest.mark.slow
def test_loading_hostile_models_keeps_the_previous_model_answering(server: Server) -> None:
    for name, match in HOSTILE_MODELS.items():
        response = httpx.post(f"{server.url}v1/internal/model/load", json={"model": name}, timeout=300)
        assert response.status_code == 400, (name, response.status_code, response.text[:300])
        message = response.json()["error"]["message"]
        assert re.search(match, message), (name, message)
        model = httpx.get(f"{server.url}v1/internal/model").json()
        assert model["name"] == DEFAULT_MODEL_FILE, (name, model)
        body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 3}
        answer = httpx.post(f"{server.url}v1/chat/completions", json=body, timeout=60)
        assert answer.status_code == 200, (name, answer.text[:300])
        assert answer.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_yaml_bombs_pasted_in_the_parameters_box_are_refused(case: str) -> None:
    from webui.ui.character_tab import parse_parameters

    assert_refused_cheaply(lambda: parse_parameters(YAML_CASES[case]), CharacterError, "Sampler parameters")


@pytest.mark.parametrize(
    "header",
    [
        b'{"a": {"shape": ["x"]}}',
        b'{"a": {"shape": [1e400]}}',
        b'{"a": {"shape": [[1]]}}',
        b"[" * 5000 + b"]" * 5000,
        b'{"a": {"shape": [-5]}}',
        b'{"a": "not a tensor", "__metadata__": [1]}',
    ],
)
def test_hostile_safetensors_header_does_not_break_the_fit_check(tmp_path: Path, header: bytes) -> None:
    from tests.support.machines import FakeMachine, machine
    from webui.core.hardware.fit import check_before_load

    folder = model_folder(
        tmp_path, "st", LLAMA_CONFIG, {"model.safetensors": struct.pack("<Q", len(header)) + header}
    )
    advice = check_before_load(
        ModelEntry("st", folder, "folder", 1), "transformers", {}, FakeMachine(machine())
    )
    assert advice is None or advice.message


def test_gguf_tensor_without_dimensions_does_not_break_the_fit_check(tmp_path: Path) -> None:
    from tests.support.machines import FakeMachine, machine
    from webui.core.hardware.fit import check_before_load

    tensor = hostile.gguf_string("token_embd.weight") + struct.pack("<I", 0) + struct.pack("<IQ", 0, 0)
    tensor += hostile.gguf_string("output.weight") + struct.pack("<IQ", 1, 4) + struct.pack("<IQ", 0, 0)
    path = tmp_path / "flat.gguf"
    path.write_bytes(
        hostile.gguf_bytes([hostile.gguf_kv_string("general.architecture", "llama")], tensor_count=2)
        + tensor
        + b"\0" * 64
    )
    advice = check_before_load(
        ModelEntry("flat.gguf", path, "gguf", 1), "llama.cpp", {}, FakeMachine(machine())
    )
    assert advice is None or advice.message
