"""Model facts, will-it-fit advice, the load refusal, `webui models inspect`, and the speed estimate's accuracy."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.config import make_config
from tests.support.machines import GB, FakeMachine, machine
from webui.core.engine import EngineError
from webui.core.hardware.estimates import (
    FITS_SHARE,
    KvCache,
    automatic_parallel,
    estimate_memory,
    estimate_speed,
    fit_advice,
    memory_verdict,
    quick_fit,
)
from webui.core.hardware.fit import AUTOMATIC, kv_cache_layout
from webui.core.hardware.machine import GpuFacts, parse_nvidia_smi
from webui.core.models.facts import ArchFacts, gguf_facts, name_disagreements
from webui.core.models.names import decode_model_name
from webui.provision import DEFAULT_MODEL_FILE


def synthetic(weight_gb: float = 7.0, layers: int = 32, params: float = 7.2e9) -> ArchFacts:
    """A Llama-2-7B-like shape: 32 layers, 32 heads, 8 KV heads of 128."""
    weight = int(weight_gb * GB)
    return ArchFacts(
        format="gguf",
        architecture="llama",
        n_layers=layers,
        n_embd=4096,
        n_head=32,
        n_head_kv=8,
        key_length=128,
        value_length=128,
        context_length=8192,
        n_vocab=32000,
        quantization="Q8_0",
        size_label="7B",
        parameter_count=int(params),
        weight_bytes=weight,
        bytes_per_token=weight,
        weights_per_token=int(params),
    )


@pytest.mark.parametrize(
    ("file_name", "base", "version", "parameters", "finetune", "quant", "description"),
    [
        (
            "codellama-13b-instruct.Q5_K_M.gguf",
            "codellama",
            None,
            "13B",
            "instruct",
            "Q5_K_M",
            "5-bit K-quant, medium",
        ),
        (
            "Llama-3.1-8B-Instruct-Q4_K_M.gguf",
            "Llama",
            "3.1",
            "8B",
            "Instruct",
            "Q4_K_M",
            "4-bit K-quant, medium",
        ),
        (
            "mixtral-8x7b-instruct-v0.1.Q4_0.gguf",
            "mixtral",
            "v0.1",
            "8x7B",
            "instruct",
            "Q4_0",
            "4-bit legacy quant, scale only",
        ),
        (
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2",
            None,
            "135M",
            "Instruct",
            "Q4_1",
            "4-bit legacy quant, scale and offset",
        ),
        ("gemma-3-270m-q4_k_m.gguf", "gemma", "3", "270M", None, "Q4_K_M", "4-bit K-quant, medium"),
        (
            "Mistral-7B-Instruct-v0.3.IQ2_XXS.gguf",
            "Mistral",
            "v0.3",
            "7B",
            "Instruct",
            "IQ2_XXS",
            "2-bit i-quant, extra-extra-small",
        ),
        ("qwen2.5-1.5b-instruct-iq4_nl.gguf", "qwen2.5", None, "1.5B", "instruct", "IQ4_NL", None),
        ("tinyllama-1.1b-chat-v1.0.Q8_0.gguf", "tinyllama", "v1.0", "1.1B", "chat", "Q8_0", None),
        ("Phi-3-mini-4k-instruct-fp16.gguf", "Phi-3-mini-4k-instruct", None, None, None, "F16", None),
        ("model.BF16.gguf", "model", None, None, None, "BF16", "bfloat16 (unquantized)"),
        ("llama-2-70b.Q2_K.gguf", "llama", "2", "70B", None, "Q2_K", "2-bit K-quant"),
        ("phi-2.F32.gguf", "phi", "2", None, None, "F32", "32-bit float (unquantized)"),
        ("model-IQ4_XS.gguf", "model", None, None, None, "IQ4_XS", "4-bit i-quant, extra-small"),
    ],
)
def test_file_names_are_decoded(
    file_name: str,
    base: str,
    version: str | None,
    parameters: str | None,
    finetune: str | None,
    quant: str,
    description: str | None,
) -> None:
    name = decode_model_name(file_name)
    assert (name.base, name.version, name.parameters, name.finetune, name.quantization) == (
        base,
        version,
        parameters,
        finetune,
        quant,
    )
    if description:
        assert name.quantization_description == description


def test_split_file_names_say_which_part() -> None:
    name = decode_model_name("Meta-Llama-3-70B-Instruct-Q4_K_M-00001-of-00003.gguf")
    assert (name.split_part, name.split_total, name.quantization, name.parameters) == (1, 3, "Q4_K_M", "70B")
    assert name.parameter_count == 70e9
    assert decode_model_name("mixtral-8x7b.Q4_0.gguf").parameter_count == 56e9


def test_default_model_header_facts(default_model_path: Path) -> None:
    facts = gguf_facts(default_model_path)
    assert (facts.architecture, facts.n_layers, facts.n_embd, facts.n_head, facts.n_head_kv) == (
        "llama",
        30,
        576,
        9,
        3,
    )
    assert (facts.key_length, facts.context_length, facts.n_vocab, facts.quantization) == (
        64,
        8192,
        49152,
        "Q4_1",
    )
    assert 130e6 < (facts.parameter_count or 0) < 140e6
    # 30 layers x 3 KV heads x (64 + 64) x 2 bytes: llama.cpp reports 45 MiB at n_ctx=2048.
    assert facts.kv_bytes_per_token * 2048 == 45 * 2**20
    assert name_disagreements(decode_model_name(default_model_path.name), facts) == []


def test_gemma_header_facts(gemma_model_path: Path) -> None:
    facts = gguf_facts(gemma_model_path)
    assert (facts.architecture, facts.n_layers, facts.n_head_kv, facts.key_length) == ("gemma3", 18, 1, 256)
    assert facts.n_vocab == 262144 and facts.quantization == "Q4_K_M" and facts.size_label == "270M"
    # Tied embeddings: the 262144 x 640 table doubles as the output head, so each token reads all of it.
    assert facts.bytes_per_token > 0.95 * (facts.weight_bytes - 8 * 2**20)


def test_a_name_that_contradicts_the_header_is_reported(default_model_path: Path) -> None:
    facts = gguf_facts(default_model_path)
    notes = name_disagreements(decode_model_name("SmolLM2-1.7B-Instruct.Q8_0.gguf"), facts)
    assert any("Q8_0" in n and "Q4_1" in n for n in notes)
    assert any("1.7B" in n for n in notes)


def test_memory_estimate_arithmetic() -> None:
    facts = synthetic()
    memory = estimate_memory(facts, machine(), n_ctx=4096, n_gpu_layers=0)
    assert memory.kv_cache_bytes == 32 * 4096 * 8 * (128 + 128) * 2  # 512 MiB, as llama.cpp allocates
    assert memory.weights_bytes == 7 * GB
    assert memory.total_bytes == memory.weights_bytes + memory.kv_cache_bytes + memory.overhead_bytes
    assert memory.ram_bytes == memory.total_bytes and memory.gpu_bytes == 0
    # No n_ctx: the loader's automatic context (the model's own, capped at 8192).
    assert estimate_memory(facts, machine()).n_ctx == 8192


def test_quantized_kv_cache_and_parallel_slots_in_the_estimate() -> None:
    facts = synthetic()
    f16 = estimate_memory(facts, machine(), n_ctx=4096).kv_cache_bytes
    q8 = estimate_memory(facts, machine(), n_ctx=4096, kv_cache=KvCache("q8_0", "q8_0")).kv_cache_bytes
    mixed = estimate_memory(facts, machine(), n_ctx=4096, kv_cache=KvCache("q8_0", "q4_0")).kv_cache_bytes
    slots = estimate_memory(facts, machine(), n_ctx=4096, kv_cache=KvCache("q4_0", "q4_0", parallel=4))
    elements = 32 * 8 * 128 * 4096  # per key (and per value): layers x kv heads x head length x n_ctx
    assert f16 == elements * 2 * 2
    assert q8 == elements * 2 * 34 // 32
    assert mixed == elements * (34 + 18) // 32
    assert slots.kv_cache_bytes == 4 * elements * 2 * 18 // 32  # every slot holds the whole context
    # The loader settings as the Model tab and the CLI pass them (strings too), unknown types as f16.
    assert kv_cache_layout({"cache_type_k": "q8_0", "cache_type_v": "q4_0", "parallel": "4"}) == KvCache(
        "q8_0", "q4_0", 4
    )
    assert kv_cache_layout({"cache_type_k": "bogus"}) == KvCache(parallel=AUTOMATIC)  # left to the machine
    # The fit message names the cache when it is not the default.
    advice = fit_advice(facts, machine(64), n_ctx=4096, kv_cache=KvCache("q8_0", "q8_0", 2))
    assert "(q8_0/q8_0, 2 slots)" in advice.message
    assert advice.memory.kv_cache_bytes == 2 * q8
    assert "slots" not in fit_advice(facts, machine(64), n_ctx=4096).message


def test_an_automatic_parallel_setting_gets_four_slots_when_their_caches_fit(
    default_model_path: Path,
) -> None:
    facts = synthetic()  # 7 GB of weights, 1 GiB of f16 cache per slot at the automatic 8192 tokens
    assert automatic_parallel(facts, machine(64)) == 4
    one = fit_advice(facts, machine(64)).memory.total_bytes
    four = fit_advice(facts, machine(64), kv_cache=KvCache(parallel=4)).memory.total_bytes
    assert four - one == 3 * 2**30
    # One slot fits this machine, four do not: one slot, not a refusal.
    middle = machine((one + four) / 2 / FITS_SHARE / GB)
    assert fit_advice(facts, middle).verdict == "fits"
    assert fit_advice(facts, middle, kv_cache=KvCache(parallel=4)).verdict != "fits"
    assert automatic_parallel(facts, middle) == 1
    # A quantized cache or a shorter context makes room for four again.
    assert automatic_parallel(facts, middle, kv_cache=KvCache("q4_0", "q4_0")) == 4
    assert automatic_parallel(facts, middle, n_ctx=2048) == 4
    # The fit check a load runs says so, for the loader with slots only; an explicit setting wins.
    from webui.core.hardware.fit import check_before_load
    from webui.core.models.discovery import entry_at

    entry = entry_at(default_model_path)
    assert entry is not None
    big = FakeMachine(machine(64))

    def message(settings: dict[str, str]) -> str:
        advice = check_before_load(entry, "llama.cpp", settings, big)
        assert advice is not None
        return advice.message

    assert "4 slots" in message({})
    assert "4 slots" in message({"parallel": "0"})
    assert "slots" not in message({"parallel": "1"})
    assert "2 slots" in message({"parallel": "2"})


def test_a_draft_model_counts_in_the_estimate(tmp_path: Path, default_model_path: Path) -> None:
    """A draft model (speculative decoding) stays in RAM beside the model, with its own cache of each slot."""
    facts, draft = synthetic(), synthetic(weight_gb=0.5, layers=16, params=0.5e9)
    alone = fit_advice(facts, machine(64), n_ctx=4096)
    both = fit_advice(facts, machine(64), n_ctx=4096, kv_cache=KvCache(parallel=2), draft=draft)
    draft_kv = 2 * 16 * 8 * 128 * 4096 * 2 * 2  # two slots' f16 keys and values
    assert both.memory.draft_bytes > draft.weight_bytes + draft_kv
    assert (
        both.memory.ram_bytes - both.memory.draft_bytes
        == estimate_memory(facts, machine(64), n_ctx=4096, kv_cache=KvCache(parallel=2)).ram_bytes
    )
    assert "draft model" in both.message and "draft model" not in alone.message
    # Enough to change the verdict on a machine the model alone fits.
    snug = machine(alone.memory.total_bytes / GB / 0.7)
    assert fit_advice(facts, snug, n_ctx=4096).verdict == "fits"
    assert fit_advice(facts, snug, n_ctx=4096, draft=synthetic(weight_gb=3.0)).verdict != "fits"
    # The settings as a load gives them: a GGUF beside the model (or a path); prompt lookup has no model.
    from webui.core.hardware.fit import check_before_load
    from webui.core.models.discovery import entry_at

    shutil.copyfile(default_model_path, tmp_path / default_model_path.name)  # a link would resolve elsewhere
    (tmp_path / "draft.gguf").symlink_to(tmp_path / default_model_path.name)
    entry = entry_at(tmp_path / default_model_path.name)
    assert entry is not None
    advice = {
        value: check_before_load(entry, "llama.cpp", {"draft_model": value}, FakeMachine(machine(64)))
        for value in ("draft.gguf", str(tmp_path / "draft.gguf"), "prompt-lookup", "missing.gguf")
    }
    size = default_model_path.stat().st_size
    assert all(a is not None for a in advice.values())
    assert advice["draft.gguf"].memory.draft_bytes > size  # type: ignore[union-attr]
    assert advice[str(tmp_path / "draft.gguf")].memory.draft_bytes > size  # type: ignore[union-attr]
    assert advice["prompt-lookup"].memory.draft_bytes == 0  # type: ignore[union-attr]
    assert advice["missing.gguf"].memory.draft_bytes == 0  # type: ignore[union-attr]  # the load says why


def test_gpu_layers_move_memory_to_the_gpu() -> None:
    gpu = GpuFacts("NVIDIA GeForce RTX 4090", 24 * GB, 20 * GB, 1008e9)
    facts = synthetic()
    half = estimate_memory(facts, machine(gpus=(gpu,)), n_ctx=4096, n_gpu_layers=16)
    assert half.gpu_layers == 16
    assert half.gpu_bytes > 0.45 * (half.weights_bytes + half.kv_cache_bytes)
    assert half.ram_bytes + half.gpu_bytes == half.total_bytes
    cpu_only = estimate_memory(facts, machine(), n_ctx=4096, n_gpu_layers=-1)
    assert cpu_only.gpu_layers == 0  # no GPU: -1 means nothing
    faster = estimate_speed(facts, machine(gpus=(gpu,)), n_ctx=4096, n_gpu_layers=32)
    slower = estimate_speed(facts, machine(), n_ctx=4096, n_gpu_layers=0)
    assert faster.tokens_per_second > 3 * slower.tokens_per_second


def test_verdict_thresholds() -> None:
    facts = synthetic(weight_gb=7.0)
    needed = estimate_memory(facts, machine(), n_ctx=4096).total_bytes / GB
    assert memory_verdict(estimate_memory(facts, machine(), n_ctx=4096), machine(needed / 0.7)) == "fits"
    assert memory_verdict(estimate_memory(facts, machine(), n_ctx=4096), machine(needed / 0.9)) == "tight"
    assert (
        memory_verdict(estimate_memory(facts, machine(), n_ctx=4096), machine(needed * 0.9)) == "does not fit"
    )


def test_advice_suggests_a_smaller_quantization_and_gpu_layers() -> None:
    facts = synthetic(weight_gb=14.2, params=13e9 * 14.2 / 13.8)
    small = machine(available_gb=9.8)
    advice = fit_advice(facts, small, name="big.Q8_0.gguf", n_ctx=4096, n_gpu_layers=0)
    assert advice.verdict == "does not fit"
    assert advice.suggested_quantization in ("Q4_K_M", "IQ4_XS", "Q3_K_M")
    assert "needs about" in advice.message and "9.8 GB RAM available" in advice.message
    assert advice.suggested_quantization in advice.message
    gpu = GpuFacts("NVIDIA L4", 24 * GB, 8 * GB, 300e9)
    with_gpu = fit_advice(facts, machine(available_gb=9.8, gpus=(gpu,)), n_ctx=4096, n_gpu_layers=0)
    assert with_gpu.suggested_n_gpu_layers and 5 < with_gpu.suggested_n_gpu_layers < 32
    assert f"n_gpu_layers={with_gpu.suggested_n_gpu_layers}" in with_gpu.message


def test_nvidia_smi_output_is_parsed() -> None:
    gpus = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 80000\nbroken line\n")
    assert len(gpus) == 1 and gpus[0].total_bytes == 81559 * 2**20 and gpus[0].bandwidth_bytes_per_s == 3350e9


def test_quick_fit_keeps_its_contract() -> None:
    tiny = quick_fit(100 * 10**6, context_length=2048)
    assert tiny.verdict in ("fits", "tight", "does not fit") and "Needs about" in tiny.message
    huge = quick_fit(10**15)
    assert huge.verdict == "does not fit"


def test_service_refuses_a_model_that_does_not_fit_unless_insisted(
    tmp_path: Path, default_model_path: Path
) -> None:
    from webui.app import build_service

    service = build_service(make_config(tmp_path / "user_data", default_model_path))
    service.machine = FakeMachine(machine(available_gb=0.1))  # 100 MB: the model needs ~0.4 GB
    try:
        with pytest.raises(EngineError) as refused:
            service.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 2048})
        message = str(refused.value)
        assert "needs about" in message and "Load anyway" in message and "--force" in message
        assert service.engine.state is None
        report = service.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 2048}, insist=True)
        assert report.state.entry.name == DEFAULT_MODEL_FILE
    finally:
        service.close()


def _inspect(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "webui", "models", "inspect", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_cli_inspect_prints_json_for_the_default_model(tmp_path: Path, default_model_path: Path) -> None:
    make_config(tmp_path / "user_data", default_model_path)
    user_data = str(tmp_path / "user_data")
    result = _inspect(DEFAULT_MODEL_FILE, "--n-ctx", "2048", "--user-data-dir", user_data)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "gguf" and report["loader"] == "llama.cpp"
    assert report["file_name"]["quantization"] == "Q4_1" and report["architecture"] == "llama"
    assert report["template"]["name"] == "ChatML" and report["context_length"] == 8192
    assert report["memory"]["kv_cache_bytes"] == 45 * 2**20 and report["verdict"] == "fits"
    assert report["speed"]["tokens_per_second"] > 0 and report["machine"]["cores"] >= 1
    missing = _inspect("nope.gguf", "--user-data-dir", user_data)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def _estimate_vs_measured(tmp_path: Path, model: Path, runs: int = 5) -> float:
    """Median over runs of (estimate with the machine measured just before / measured tokens/s)."""
    from webui.app import build_service
    from webui.core.hardware.machine import MachineProbe
    from webui.core.params import GenerationParams

    service = build_service(make_config(tmp_path / model.stem, model))
    probe = MachineProbe()
    facts = gguf_facts(model)
    params = GenerationParams(temperature=0, max_new_tokens=64, ban_eos_token=True)
    ratios = []
    try:
        # Tokens in 20 ms pieces: the estimate is of the backend's decoding, not of handing each token on.
        service.load_model(model.name, settings={"n_ctx": 2048, "stream_interval": 0.02})
        service.stream_completion("The history of Paris", params).text()  # page the weights in
        for _ in range(runs):
            estimate = estimate_speed(facts, probe.facts(remeasure=True), n_ctx=2048, n_gpu_layers=0)
            job = service.stream_completion("The history of the city of Paris begins", params)
            job.text()
            assert job.stats is not None and job.stats.new_tokens == 64
            ratios.append(estimate.tokens_per_second / job.stats.tokens_per_second)
    finally:
        service.close()
    return statistics.median(ratios)


@pytest.mark.slow
def test_speed_estimate_is_within_35_percent_for_the_default_model(
    tmp_path: Path, default_model_path: Path
) -> None:
    ratio = _estimate_vs_measured(tmp_path, default_model_path)
    assert 0.65 <= ratio <= 1.35, f"estimate / measured = {ratio:.2f}"


@pytest.mark.slow
def test_speed_estimate_is_within_35_percent_for_gemma(tmp_path: Path, gemma_model_path: Path) -> None:
    ratio = _estimate_vs_measured(tmp_path, gemma_model_path)
    assert 0.65 <= ratio <= 1.35, f"estimate / measured = {ratio:.2f}"


def test_replace_keeps_facts_frozen() -> None:
    facts = replace(synthetic(), n_vocab=None)
    assert estimate_memory(facts, machine(), n_ctx=1024).overhead_bytes > 0
