"""The loader contract at its seams: which loader claims which files, settings validated once, typed chunks.

Unit tests with small in-test loaders; the real loaders run in test_loader_contract.py, and a loader from
another package in test_loader_entry_point.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, get_args

import pytest
from pydantic import BaseModel, field_validator

from loaders.llama_cpp import LlamaCppLoader, LlamaCppSettings
from webui.core.engine import Engine
from webui.core.hardware.fit import check_before_load
from webui.core.hardware.machine import MachineFacts
from webui.core.loader import (
    CancelToken,
    Chunk,
    Claim,
    FinishReason,
    Loader,
    LoaderCapabilities,
    LoaderError,
    ModelFacts,
    PromptUsage,
    ToolCallDelta,
)
from webui.core.models.discovery import ModelEntry, ModelFileError, infer_loader
from webui.core.params import GenerationParams
from webui.core.registry import LoaderRegistry

CAPABILITIES = LoaderCapabilities(honoured_params=frozenset({"max_new_tokens"}))


class CountedSettings(BaseModel):
    """Counts its validations, so a test can tell the settings were validated once."""

    validations: ClassVar[int] = 0
    level: int = 0

    @field_validator("level")
    @classmethod
    def _count(cls, value: int) -> int:
        CountedSettings.validations += 1
        return value


class PartsModel:
    """Streams answer text, reasoning and a tool call, as a thinking model with tools would."""

    def __init__(self, path: Path) -> None:
        self.facts = ModelFacts(name=path.name, path=path, loader="parts", context_length=256)
        self.capabilities = CAPABILITIES

    def stream(self, prompt: str, params: GenerationParams, cancel: CancelToken) -> Iterator[Chunk]:
        yield Chunk(reasoning="Thinking about END", tokens=3)
        yield Chunk("Answer ", tokens=1, prompt=PromptUsage(5))
        call = ToolCallDelta(index=0, id="call-1", name="lookup", arguments='{"q": "END"}')
        yield Chunk(tool_calls=(call,), tokens=4)
        yield Chunk("text END more", tokens=3, prompt=PromptUsage(7, reused=2))
        yield Chunk(finish_reason="length")

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return [0] * len(text.split())

    def detokenize(self, tokens: list[int]) -> str:
        return ""

    def unload(self) -> None:
        pass


class PartsLoader(Loader[CountedSettings]):
    """Opens *.parts files; remembers the settings each load received."""

    name: ClassVar[str] = "parts"
    capabilities: ClassVar[LoaderCapabilities] = CAPABILITIES
    settings_model = CountedSettings
    received: ClassVar[list[CountedSettings]] = []

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        return Claim.MADE_FOR if entry.path.suffix == ".parts" else Claim.NONE

    def load(self, path: Path, settings: CountedSettings) -> PartsModel:
        self.received.append(settings)
        return PartsModel(path)


class GgufToo(PartsLoader):
    """Claims GGUF files more narrowly than llama.cpp (as a loader for one GGUF family would)."""

    name: ClassVar[str] = "gguf-too"

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        return Claim.NARROWER if entry.kind == "gguf" else Claim.NONE


def entry(path: Path, kind: str) -> ModelEntry:
    return ModelEntry(path.name, path, kind, 1)


def test_finish_reasons_are_a_closed_set() -> None:
    assert set(get_args(FinishReason)) == {"stop", "length", "cancelled", "tool_calls"}


def test_the_strongest_claim_wins_and_broken_loaders_claim_nothing(tmp_path: Path) -> None:
    gguf = entry(tmp_path / "m.gguf", "gguf")
    registry = LoaderRegistry(
        {"llama.cpp": LlamaCppLoader, "gguf-too": GgufToo, "broken": "no_such_package.module:Loader"}
    )
    assert infer_loader(gguf, registry) == "gguf-too"
    assert (
        infer_loader(gguf, LoaderRegistry({"llama.cpp": LlamaCppLoader, "broken": "nope:X"})) == "llama.cpp"
    )
    with pytest.raises(ModelFileError, match=r"No installed loader opens notes\.txt"):
        infer_loader(entry(tmp_path / "notes.txt", "file"), registry)


def test_built_in_loaders_claim_their_own_files(tmp_path: Path) -> None:
    installed = LoaderRegistry.from_entry_points()
    folders = {}
    for name, method in (("plain", None), ("gptq-model", "gptq"), ("awq-model", "AWQ")):
        folder = tmp_path / name
        folder.mkdir()
        config: dict[str, object] = {"architectures": ["X"]}
        if method:
            config["quantization_config"] = {"quant_method": method}
        (folder / "config.json").write_text(json.dumps(config))
        folders[name] = entry(folder, "folder")
    assert installed.claimant(entry(tmp_path / "m.gguf", "gguf")) == "llama.cpp"
    assert installed.claimant(folders["plain"]) == "transformers"
    assert installed.claimant(folders["gptq-model"]) == "gptq"
    assert installed.claimant(folders["awq-model"]) == "awq"
    assert installed.claimant(ModelEntry("served", Path("served"), "remote", 0)) == "remote"
    assert installed.claimant(entry(tmp_path / "notes.txt", "file")) is None


def test_wrong_loader_message_names_the_loader_the_registry_picks(tmp_path: Path) -> None:
    folder = tmp_path / "gptq-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq"}}))
    with pytest.raises(LoaderError, match=r"gptq-model is a model folder: pick the gptq loader\.$"):
        LlamaCppLoader().load(folder, LlamaCppSettings())


def test_the_engine_validates_settings_once_and_passes_the_model(tmp_path: Path) -> None:
    (tmp_path / "a.parts").write_text("")
    engine = Engine(LoaderRegistry({"parts": PartsLoader}), tmp_path)
    try:
        before = CountedSettings.validations
        state = engine.load(str(tmp_path / "a.parts"), "parts", {"level": "3"})
        assert CountedSettings.validations == before + 1
        assert PartsLoader.received[-1] is state.settings
        assert isinstance(state.settings, CountedSettings) and state.settings.level == 3
        assert state.capabilities is CAPABILITIES
    finally:
        engine.close()


def test_reasoning_and_tool_call_parts_pass_the_engine_and_stops_cut_only_text(tmp_path: Path) -> None:
    (tmp_path / "a.parts").write_text("")
    engine = Engine(LoaderRegistry({"parts": PartsLoader}), tmp_path)
    try:
        engine.load(str(tmp_path / "a.parts"), "parts")
        job = engine.submit("prompt", GenerationParams(max_new_tokens=50), stops=["END"])
        chunks = list(job)
    finally:
        engine.close()
    assert "".join(chunk.text for chunk in chunks) == "Answer text "
    assert "".join(chunk.reasoning for chunk in chunks) == "Thinking about END"  # stop strings are for text
    calls = [call for chunk in chunks for call in chunk.tool_calls]
    assert calls == [ToolCallDelta(index=0, id="call-1", name="lookup", arguments='{"q": "END"}')]
    # The reply made a call: its client has a call to run, whatever ended the text.
    assert job.finish_reason == "tool_calls" and chunks[-1].finish_reason == "tool_calls"
    stats = chunks[-1].stats
    assert stats is not None and stats.prompt == PromptUsage(7, reused=2)  # the last count the loader gave
    assert (stats.prompt_tokens, stats.reused_prompt_tokens, stats.new_tokens) == (7, 2, 11)


class UnaskedMachine:
    """A machine the fit check must not need to ask about."""

    def facts(self, threads: int | None = None, *, measure_speed: bool = True) -> MachineFacts:
        raise AssertionError("the fit check asked about the machine")


def test_the_fit_check_asks_the_loader_whether_it_runs_here(tmp_path: Path) -> None:
    class Served(PartsLoader):
        """A loader whose models live on a server (like remote): nothing to fit into this machine."""

        capabilities: ClassVar[LoaderCapabilities] = LoaderCapabilities(
            honoured_params=frozenset(), needs_files=False
        )

    gguf = entry(tmp_path / "m.gguf", "gguf")
    registry = LoaderRegistry({"served": Served})
    assert check_before_load(gguf, "served", {}, UnaskedMachine(), registry) is None
    assert check_before_load(gguf, "unknown", {}, UnaskedMachine(), registry) is None
