"""Fuzzing the parsers of files from strangers with hypothesis, for a bounded number of examples each.

Card JSON and PNG, Modelfiles, YAML presets / templates / personalities, the GGUF header reader and chat import:
whatever the bytes, only the parser's own clear error may come out (never a KeyError, RecursionError, ...).
"""

from __future__ import annotations

import base64
import json
import os
import string
import struct
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webui.config import PROJECT_ROOT
from webui.core.characters import cards
from webui.core.characters.modelfile import INSTRUCTIONS, ModelfileError, parse_modelfile
from webui.core.characters.store import CharacterError, CharacterStore
from webui.core.chats.records import ChatStoreError
from webui.core.chats.store import ChatStore
from webui.core.models.discovery import ModelFileError, gguf_metadata
from webui.core.models.gguf_header import GGUFHeaderError, read_gguf_header
from webui.core.params import PARAM_NAMES
from webui.core.presets import PresetError, PresetStore
from webui.core.templates.store import TemplateError, TemplateStore

# Per test: a few seconds each on a 2-core machine. PALABRE_FUZZ_EXAMPLES=5000 fuzzes longer (by hand).
EXAMPLES = int(os.environ.get("PALABRE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=3),  # a single input that takes seconds is a finding (quadratic parsing)
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# JSON-like values, with the keys the parsers look for so that the fuzzing reaches past the first check.
KEYS = st.sampled_from(
    [
        "name",
        "spec",
        "data",
        "description",
        "first_mes",
        "mes_example",
        "extensions",
        "palabre",
        "character_book",
        "alternate_greetings",
        "tags",
        "parameters",
        "greeting",
        "context",
        "avatar",
        "format",
        "version",
        "messages",
        "alternatives",
        "content",
        "role",
        "active",
        "internal",
        "visible",
        "metadata",
        "instruction_template",
        "char_name",
        "char_persona",
        *sorted(PARAM_NAMES)[:12],
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["chara_card_v2", "chara_card_v3", "palabre-chat", "user", "assistant", "system"])
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(KEYS | st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=25,
)


# Shapes that broke parsers elsewhere: deep nesting, huge numbers, aliases of aliases, self-reference.
BOMBS = st.one_of(
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(4000, 6000).map(lambda n: b'{"name": ' + b"7" * n + b"}"),
    st.integers(4000, 6000).map(lambda n: b"temperature: " + b"7" * n),
    st.integers(2, 9).map(
        lambda n: (
            b"a: &a [x, x, x, x, x, x, x, x]\n"
            + b"".join(
                b"k%d: &k%d [%s]\n" % (i, i, b", ".join([b"*a" if i == 0 else b"*k%d" % (i - 1)] * 8))
                for i in range(n)
            )
        )
    ),
    st.just(b"a: &a [*a]\nname: &n {x: *n}\n"),
)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="palabre-fuzz-") as name:
        yield Path(name)


def stores(root: Path) -> tuple[PresetStore, TemplateStore, CharacterStore]:
    templates = TemplateStore(PROJECT_ROOT / "instruction-templates", root / "templates")
    presets = PresetStore(PROJECT_ROOT / "presets", root / "presets")
    characters = CharacterStore(PROJECT_ROOT / "characters", root / "characters", templates)
    for path in (templates.user_dir, presets.user_dir, characters.user_dir):
        path.mkdir(parents=True, exist_ok=True)
    return presets, templates, characters


# -- character cards -----------------------------------------------------------------------------------------


@FUZZ
@given(card=VALUES, raw=st.binary(max_size=200) | BOMBS)
def test_card_json_parser_raises_only_card_errors(card: Any, raw: bytes) -> None:
    for data in (json.dumps(card), raw, json.dumps({"spec": "chara_card_v2", "data": card})):
        try:
            cards.parse_card_json(data)
        except cards.CardError as exc:
            assert str(exc)


@FUZZ
@given(card=VALUES, envelope=st.booleans(), bomb=st.none() | BOMBS)
def test_card_json_import_raises_only_character_errors(
    folder: Path, card: Any, envelope: bool, bomb: bytes | None
) -> None:
    _, _, characters = stores(folder / "import")
    path = folder / "card.json"
    text = json.dumps({"spec": "chara_card_v2", "data": card} if envelope else card)
    path.write_bytes(bomb if bomb is not None else text.encode())
    try:
        characters.import_file(path, overwrite=True)
    except CharacterError as exc:
        assert str(exc)


def card_png(card: Any) -> bytes:
    return cards.write_card_png(
        {"spec": "chara_card_v2", "data": card} if isinstance(card, dict) else {"x": card},
        cards.placeholder_png("x", size=8),
    )


@FUZZ
@given(card=VALUES, edits=st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=4)), max_size=4))
def test_card_png_parser_raises_only_card_errors(card: Any, edits: list[tuple[int, bytes]]) -> None:
    raw = bytearray(card_png(card))
    for position, replacement in edits:
        at = position % (len(raw) + 1)
        raw[at : at + len(replacement)] = replacement
    for data in (bytes(raw), bytes(raw[: len(raw) // 2])):
        try:
            cards.read_card_png(data)
        except cards.CardError as exc:
            assert str(exc)


@FUZZ
@given(text=st.binary(max_size=64), keyword=st.sampled_from([b"chara", b"ccv3"]))
def test_card_png_with_junk_in_its_card_chunk_raises_only_card_errors(text: bytes, keyword: bytes) -> None:
    base = cards.png_chunks(cards.placeholder_png("x", size=8))
    for payload in (text, base64.b64encode(text)):
        raw = cards.build_png([base[0], (b"tEXt", keyword + b"\0" + payload), *base[1:]])
        try:
            cards.read_card_png(raw)
        except cards.CardError as exc:
            assert str(exc)


# -- Modelfiles ----------------------------------------------------------------------------------------------

WORDS = st.sampled_from([*sorted(INSTRUCTIONS), *[w.upper() for w in sorted(INSTRUCTIONS)], "#", '"""', '"'])
LINE = st.tuples(
    WORDS, st.sampled_from(["", " ", "\t"]), st.text(string.printable + "é\u2028", max_size=30)
).map("".join)


@FUZZ
@given(lines=st.lists(LINE, max_size=12), junk=st.text(max_size=40))
def test_modelfile_parser_raises_only_modelfile_errors(folder: Path, lines: list[str], junk: str) -> None:
    for text in ("\n".join(lines), "FROM x\n" + "\n".join(lines), junk, "FROM x\n" + junk):
        try:
            parse_modelfile(text)
        except ModelfileError as exc:
            assert str(exc)
    _, _, characters = stores(folder / "modelfile")
    path = folder / "Fuzz.Modelfile"
    path.write_text("FROM x\n" + "\n".join(lines), encoding="utf-8")
    try:
        characters.import_file(path, overwrite=True)
    except CharacterError as exc:
        assert str(exc)


# -- YAML presets, templates and personalities ---------------------------------------------------------------


def yaml_texts() -> st.SearchStrategy[str]:
    structured = VALUES.map(lambda v: yaml.safe_dump(v, allow_unicode=True))
    overlay = st.dictionaries(st.sampled_from(sorted(PARAM_NAMES)) | KEYS, VALUES, max_size=6).map(
        lambda v: yaml.safe_dump(v, allow_unicode=True)
    )
    junk = st.text(":-[]{}&*!|>'\"#%@` \n\tab1", max_size=60)
    return structured | overlay | junk | st.text(max_size=60) | BOMBS.map(lambda b: b.decode())


@FUZZ
@given(text=yaml_texts())
def test_yaml_stores_raise_only_their_own_errors(folder: Path, text: str) -> None:
    presets, templates, characters = stores(folder / "yaml")
    for directory in (presets.user_dir, templates.user_dir, characters.user_dir):
        (directory / "fuzz.yaml").write_text(text, encoding="utf-8")
    try:
        presets.load("fuzz")
    except PresetError as exc:
        assert str(exc)
    try:
        templates.get("fuzz").render([{"role": "user", "content": "hi"}])
    except TemplateError as exc:
        assert str(exc)
    try:
        characters.load("fuzz")
    except CharacterError as exc:
        assert str(exc)


@FUZZ
@given(source=st.text("{}%#()[]|.~+*-'\"_ abcdefgimnorstux0123456789\n", max_size=60))
def test_template_sources_raise_only_template_errors(folder: Path, source: str) -> None:
    _, templates, _ = stores(folder / "jinja")
    (templates.user_dir / "fuzz.jinja").write_text(source, encoding="utf-8")
    try:
        templates.get("fuzz").render([{"role": "user", "content": "hi"}], bos_token="<s>")
    except TemplateError as exc:
        assert str(exc)


# -- GGUF headers --------------------------------------------------------------------------------------------


def gguf_file(entries: list[tuple[str, int, bytes]], tensor_count: int) -> bytes:
    body = b"".join(
        struct.pack("<Q", len(key.encode())) + key.encode() + struct.pack("<I", kind) + value
        for key, kind, value in entries
    )
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, len(entries)) + body


GGUF_VALUES = st.tuples(
    st.sampled_from(
        ["general.architecture", "general.name", "llama.context_length", "tokenizer.chat_template"]
    )
    | st.text(max_size=8),
    st.integers(0, 13),
    st.binary(max_size=24),
)


@FUZZ
@given(
    entries=st.lists(GGUF_VALUES, max_size=5),
    tensors=st.integers(0, 2**64 - 1),
    edits=st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=8)), max_size=3),
    cut=st.integers(0, 400),
)
def test_gguf_header_reader_raises_only_header_errors(
    folder: Path,
    entries: list[tuple[str, int, bytes]],
    tensors: int,
    edits: list[tuple[int, bytes]],
    cut: int,
) -> None:
    raw = bytearray(gguf_file(entries, tensors))
    for position, replacement in edits:
        at = position % (len(raw) + 1)
        raw[at : at + len(replacement)] = replacement
    path = folder / "fuzz.gguf"
    for data in (bytes(raw), bytes(raw[:cut])):
        path.write_bytes(data)
        try:
            read_gguf_header(path)
        except GGUFHeaderError as exc:
            assert str(exc)
        try:
            gguf_metadata(path)
        except ModelFileError as exc:
            assert str(exc)


# -- chat import ---------------------------------------------------------------------------------------------


@FUZZ
@given(messages=VALUES, rows=VALUES, tgw=st.booleans(), title=VALUES)
def test_chat_import_raises_only_chat_store_errors(
    folder: Path, messages: Any, rows: Any, tgw: bool, title: Any
) -> None:
    store = ChatStore(folder / "chats.db")
    try:
        if tgw:
            data: Any = {"internal": rows, "visible": rows, "metadata": messages}
        else:
            data = {"format": "palabre-chat", "version": 1, "messages": messages, "title": title}
        for candidate in (data, messages):
            try:
                store.import_json(candidate)
            except ChatStoreError as exc:
                assert str(exc)
    finally:
        store.close()


# -- model folders (config.json, safetensors header) through the fit check -------------------------------------

CONFIG_KEYS = st.sampled_from(
    [
        "model_type",
        "architectures",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "torch_dtype",
        "text_config",
        "quantization_config",
        "bits",
        "quant_method",
        "num_local_experts",
        "num_experts_per_tok",
    ]
)
CONFIG_VALUES = st.recursive(
    SCALARS | st.integers(-(2**64), 2**64),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(CONFIG_KEYS, children, max_size=6),
    max_leaves=20,
)


@FUZZ
@given(
    config=st.dictionaries(CONFIG_KEYS, CONFIG_VALUES, max_size=10) | VALUES,
    header=VALUES | st.dictionaries(st.text(max_size=4), st.fixed_dictionaries({"shape": VALUES})),
    junk=st.none() | st.binary(max_size=40) | BOMBS,
)
def test_model_folder_facts_raise_only_model_file_errors(
    folder: Path, config: Any, header: Any, junk: bytes | None
) -> None:
    from tests.support.machines import FakeMachine, machine
    from webui.core.hardware.fit import check_before_load
    from webui.core.models.discovery import ModelEntry, folder_metadata, infer_loader

    model = folder / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_bytes(junk if junk is not None else json.dumps(config).encode())
    body = json.dumps(header).encode()
    (model / "model.safetensors").write_bytes(struct.pack("<Q", len(body)) + body)
    entry = ModelEntry("model", model, "folder", 1)
    try:
        folder_metadata(model)
        loader = infer_loader(entry)
        check_before_load(entry, loader, {}, FakeMachine(machine()))
    except ModelFileError as exc:
        assert str(exc)


TENSORS = st.lists(
    st.tuples(
        st.sampled_from(["token_embd.weight", "output.weight", "blk.0.ffn_up_exps.weight", "x"]),
        st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 4096), max_size=9),
        st.integers(0, 2**32 - 1) | st.integers(0, 40),
        st.integers(0, 2**64 - 1),
    ),
    max_size=4,
)
ARCH_KEYS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "llama.block_count",
                "llama.embedding_length",
                "llama.attention.head_count",
                "llama.attention.head_count_kv",
                "llama.context_length",
                "llama.expert_count",
                "llama.expert_used_count",
                "general.file_type",
            ]
        ),
        st.integers(0, 2**64 - 1) | st.integers(0, 64),
    ),
    max_size=8,
)


@FUZZ
@given(tensors=TENSORS, keys=ARCH_KEYS)
def test_gguf_facts_and_fit_check_raise_only_model_file_errors(
    folder: Path, tensors: list[tuple[str, list[int], int, int]], keys: list[tuple[str, int]]
) -> None:
    from tests.support.machines import FakeMachine, machine
    from webui.core.hardware.fit import check_before_load
    from webui.core.models.discovery import ModelEntry
    from webui.core.models.facts import gguf_facts

    entries = [("general.architecture", 8, struct.pack("<Q", 5) + b"llama")]
    entries += [(key, 10, struct.pack("<Q", value)) for key, value in keys]
    raw = gguf_file(entries, len(tensors))
    for name, dims, kind, offset in tensors:
        raw += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(dims))
        raw += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", kind, offset)
    path = folder / "facts.gguf"
    path.write_bytes(raw + b"\0" * 64)
    try:
        gguf_facts(path)
        check_before_load(
            ModelEntry("facts.gguf", path, "gguf", len(raw)), "llama.cpp", {}, FakeMachine(machine())
        )
    except ModelFileError as exc:
        assert str(exc)
