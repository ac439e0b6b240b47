"""Will it fit, and how fast will it run: memory and speed estimates for a model on this machine.

The model's shape comes from webui/core/models/facts.py, the machine's figures from webui/core/hardware/machine.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal, Protocol

from webui.core.hardware.machine import MachineFacts
from webui.core.models.facts import ArchFacts
from webui.core.models.names import BITS_PER_WEIGHT, SUGGESTED_QUANTS

Verdict = Literal["fits", "tight", "does not fit"]

AUTO_CONTEXT_CAP = (
    8192  # the llama.cpp loader's "auto" context: the model's own, capped (loaders/llama_cpp.py)
)
N_UBATCH = 512  # llama.cpp's default micro-batch: sizes the compute buffer
RUNTIME_BYTES = 150 * 2**20  # the inference library itself, its threads and scratch space
FITS_SHARE = 0.8  # up to 80% of what is available: fits; up to 100%: tight (the OS and browser need room too)
LAYER_OPS = 170  # per-layer scheduling cost, in units of one tiny vector operation (see estimate_speed)
GPU_EFFICIENCY = 0.7  # share of a GPU's data-sheet bandwidth llama.cpp reaches while generating
GPU_LAYER_SECONDS = 30e-6  # kernel launches per layer on a GPU
OVERLAP_EXPOSED = 0.5  # share of the shorter of memory/compute time that is not hidden behind the longer
SHORT_CONTEXT = 256  # tokens in the context for the headline speed: the start of a conversation
# Bytes per cached element for each llama.cpp KV cache type: f16 is 2; q8_0 and q4_0 store blocks of 32 values
# as one f16 scale plus 32 bytes (34/32) or 16 bytes (18/32).
KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
AUTO_PARALLEL = 4  # slots an automatic load gets when their caches fit (see automatic_parallel)


class MachineSource(Protocol):
    """Anything that can describe the machine (MachineProbe, or a fake in tests)."""

    def facts(self, threads: int | None = None, *, measure_speed: bool = True) -> MachineFacts: ...


@dataclass(frozen=True)
class FitVerdict:
    """Whether a model of a given size fits this machine, with a sentence for the user."""

    verdict: Verdict
    message: str


@dataclass(frozen=True)
class KvCache:
    """How the KV cache is stored: key and value types (llama.cpp's cache_type_k / cache_type_v) and the
    parallel slots, each with the whole context."""

    type_k: str = "f16"
    type_v: str = "f16"
    parallel: int = 1

    def bytes_per_token(self, facts: ArchFacts) -> int:
        """layers x kv heads x (key length x bytes per key element + value length x bytes per value element)."""
        if not (facts.n_layers and facts.n_head_kv and facts.key_length and facts.value_length):
            return 0
        per_layer = facts.key_length * KV_TYPE_BYTES.get(self.type_k, 2.0)
        per_layer += facts.value_length * KV_TYPE_BYTES.get(self.type_v, 2.0)
        return int(facts.n_layers * facts.n_head_kv * per_layer)

    def describe(self) -> str:
        """'' for the default f16 cache with one slot, else e.g. ' (q8_0/q4_0, 4 slots)'."""
        parts = [] if self.type_k == self.type_v == "f16" else [f"{self.type_k}/{self.type_v}"]
        if self.parallel > 1:
            parts.append(f"{self.parallel} slots")
        return f" ({', '.join(parts)})" if parts else ""


F16_CACHE = KvCache()


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model needs, and where they live."""

    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    n_ctx: int
    gpu_layers: int  # layers actually placed on a GPU (0 without one)
    gpu_bytes: int
    ram_bytes: int
    draft_bytes: int = 0  # a draft model for speculative decoding, all in RAM (counted in ram_bytes)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes + self.draft_bytes


@dataclass(frozen=True)
class SpeedEstimate:
    """Predicted generation speed and what bounds it."""

    tokens_per_second: float
    tokens_per_second_full_context: float
    memory_seconds: float
    compute_seconds: float
    overhead_seconds: float
    gpu_seconds: float
    bound: str  # "memory bandwidth" | "compute" | "overhead" | "GPU"


@dataclass(frozen=True)
class FitAdvice:
    """The verdict with the numbers behind it and what to change."""

    verdict: Verdict
    message: str
    memory: MemoryEstimate
    suggested_n_gpu_layers: int | None
    suggested_quantization: str | None
    suggested_n_ctx: int | None


def gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e8 else f"{value / 1e6:.0f} MB"


def effective_n_ctx(facts: ArchFacts, n_ctx: int | None) -> int:
    """The context the loader will allocate: the given one, else the model's own capped like the loader."""
    if n_ctx and n_ctx > 0:
        return n_ctx
    return min(facts.context_length or 4096, AUTO_CONTEXT_CAP)


def gpu_layers_used(facts: ArchFacts, machine: MachineFacts, n_gpu_layers: int | None) -> int:
    """How many layers go to a GPU: none without one, all for -1 (llama.cpp's meaning)."""
    layers = facts.n_layers or 1
    if not machine.gpus or not n_gpu_layers:
        return 0
    return layers if n_gpu_layers < 0 else min(n_gpu_layers, layers)


def estimate_memory(
    facts: ArchFacts,
    machine: MachineFacts,
    *,
    n_ctx: int | None = None,
    n_gpu_layers: int | None = None,
    kv_cache: KvCache = F16_CACHE,
) -> MemoryEstimate:
    """weights (file size) + KV cache + overhead.

    The KV cache holds, per context token of each parallel slot, layers x kv heads x (key + value length)
    elements of the cache types' sizes (f16: 2 bytes, q8_0: 34/32, q4_0: 18/32; see ``KvCache``).

    The overhead is llama.cpp's compute buffer, which holds one micro-batch's logits and attention scores
    (4 bytes x 512 x (vocabulary + n_ctx x heads / 2)), plus the runtime itself. Offloaded layers move
    their share of weights and KV cache to the GPU; mmap keeps them out of RAM.
    """
    ctx = effective_n_ctx(facts, n_ctx)
    kv = kv_cache.bytes_per_token(facts) * ctx * max(1, kv_cache.parallel)
    compute = 4 * N_UBATCH * ((facts.n_vocab or 32000) + ctx * (facts.n_head or 8) // 2)
    overhead = compute + RUNTIME_BYTES
    on_gpu = gpu_layers_used(facts, machine, n_gpu_layers)
    share = on_gpu / (facts.n_layers or 1)
    gpu = int((facts.weight_bytes + kv) * share) + (compute if on_gpu else 0)
    total = facts.weight_bytes + kv + overhead
    return MemoryEstimate(facts.weight_bytes, kv, overhead, ctx, on_gpu, gpu, total - gpu)


def estimate_speed(
    facts: ArchFacts, machine: MachineFacts, *, n_ctx: int | None = None, n_gpu_layers: int | None = None
) -> SpeedEstimate:
    """Tokens/s for generation, from a roofline model measured on this machine.

    Each generated token multiplies a vector by every weight matrix once (MoE: the used experts; the token
    embedding: one row, unless it doubles as the output head). On the CPU that is bounded by whichever is
    slower, reading the bytes or doing the arithmetic:

        cpu_s     = max(mem_s, compute_s) + 0.5 x min(mem_s, compute_s)
                    with mem_s = bytes_read / bandwidth, compute_s = weights / matvec_rate
        gpu_s     = gpu_bytes_read / (GPU bandwidth x 0.7) + gpu_layers x 30 us
        overhead  = cpu_layers x 170 x tiny_op_s + vocabulary x 16 bytes / bandwidth
        tokens/s  = 1 / (cpu_s + gpu_s + overhead)

    ``bandwidth`` is a measured large copy and ``matvec_rate`` a measured float32 matrix-vector product on a
    cache-resident matrix, both with the generation thread count: llama.cpp's quantized dot products run at
    about the same weights per second as a float32 one, so small quantized models on few cores are compute
    bound, and big ones memory bound. The two overlap only partly (a core has few outstanding cache misses
    and prefetching stalls on dequantization), so half the shorter one shows: with full overlap (pure max)
    the estimate ran 10-60% fast on a busy machine, with none (a sum) 20-30% slow on a quiet one. Tiny models also pay a fixed cost per layer (graph scheduling, norms,
    RoPE, softmax, thread hand-offs) that does not shrink with the weights; it is expressed in units of a
    measured tiny vector operation so it scales with the CPU (170 per layer fits SmolLM2-135M, 30 layers, and
    Gemma-3-270M, 18 layers, on the 2-core build machine). The vocabulary term is the logits and sampler pass.
    The KV cache read grows with the context: the headline figure assumes 256 tokens, the other a full one.
    """
    layers = facts.n_layers or 1
    on_gpu = gpu_layers_used(facts, machine, n_gpu_layers)
    share = on_gpu / layers
    bandwidth = max(machine.bandwidth_bytes_per_s, 1e6)
    compute_rate = max(machine.compute_weights_per_s, 1e6)
    gpu_bandwidth = sum(g.bandwidth_bytes_per_s for g in machine.gpus[:1]) * GPU_EFFICIENCY or 1.0
    ctx = effective_n_ctx(facts, n_ctx)

    def per_token(context_tokens: int) -> tuple[float, float, float, float]:
        kv_read = facts.kv_bytes_per_token * context_tokens
        cpu_bytes = (facts.bytes_per_token + kv_read) * (1 - share)
        memory_s = cpu_bytes / bandwidth
        compute_s = facts.weights_per_token * (1 - share) / compute_rate
        gpu_s = (
            (facts.bytes_per_token + kv_read) * share / gpu_bandwidth + on_gpu * GPU_LAYER_SECONDS
            if on_gpu
            else 0.0
        )
        overhead_s = (layers - on_gpu) * LAYER_OPS * machine.dispatch_seconds + (
            facts.n_vocab or 32000
        ) * 16 / bandwidth
        return memory_s, compute_s, gpu_s, overhead_s

    memory_s, compute_s, gpu_s, overhead_s = per_token(min(SHORT_CONTEXT, ctx))
    seconds = _overlap(memory_s, compute_s) + gpu_s + overhead_s
    full = per_token(ctx)
    full_seconds = _overlap(full[0], full[1]) + full[2] + full[3]
    parts = {"memory bandwidth": memory_s, "compute": compute_s, "GPU": gpu_s, "overhead": overhead_s}
    return SpeedEstimate(
        tokens_per_second=1 / seconds,
        tokens_per_second_full_context=1 / full_seconds,
        memory_seconds=memory_s,
        compute_seconds=compute_s,
        overhead_seconds=overhead_s,
        gpu_seconds=gpu_s,
        bound=max(parts, key=lambda k: parts[k]),
    )


def _overlap(memory_s: float, compute_s: float) -> float:
    """Reading and arithmetic overlap partly: the longer one plus half the shorter (see estimate_speed)."""
    return max(memory_s, compute_s) + OVERLAP_EXPOSED * min(memory_s, compute_s)


def _verdict_for(needed: int, available: int) -> Verdict:
    if needed <= available * FITS_SHARE:
        return "fits"
    return "tight" if needed <= available else "does not fit"


def _worst(*verdicts: Verdict) -> Verdict:
    order: list[Verdict] = ["fits", "tight", "does not fit"]
    return max(verdicts, key=order.index)


def memory_verdict(memory: MemoryEstimate, machine: MachineFacts) -> Verdict:
    """Fits / tight / does not fit: RAM part against available RAM, GPU part against free VRAM."""
    ram = _verdict_for(memory.ram_bytes, machine.available_ram_bytes)
    if memory.gpu_bytes:
        return _worst(ram, _verdict_for(memory.gpu_bytes, machine.free_vram_bytes))
    return ram


def _fits(
    facts: ArchFacts, machine: MachineFacts, n_ctx: int, n_gpu_layers: int, kv_cache: KvCache = F16_CACHE
) -> bool:
    memory = estimate_memory(facts, machine, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, kv_cache=kv_cache)
    return memory_verdict(memory, machine) == "fits"


def suggest_gpu_layers(
    facts: ArchFacts, machine: MachineFacts, n_ctx: int, kv_cache: KvCache = F16_CACHE
) -> int | None:
    """The most layers whose weights and cache fit the free VRAM (None without a GPU or when none fit)."""
    if not machine.gpus or not facts.n_layers:
        return None
    for layers in range(facts.n_layers, 0, -1):
        memory = estimate_memory(facts, machine, n_ctx=n_ctx, n_gpu_layers=layers, kv_cache=kv_cache)
        if memory.gpu_bytes <= machine.free_vram_bytes * FITS_SHARE:
            return layers
    return None


def suggest_quantization(
    facts: ArchFacts, machine: MachineFacts, n_ctx: int, kv_cache: KvCache = F16_CACHE
) -> str | None:
    """The best common quantization smaller than this file whose estimate fits (None if none does)."""
    params = facts.parameter_count
    if not params:
        return None
    current = facts.weight_bytes * 8 / params
    budget = machine.available_ram_bytes + machine.free_vram_bytes
    for quant in SUGGESTED_QUANTS:
        bits = BITS_PER_WEIGHT[quant]
        if bits >= current - 0.1:
            continue
        weights = int(params * bits / 8)
        scale = weights / max(facts.weight_bytes, 1)
        total = weights + kv_cache.bytes_per_token(facts) * n_ctx * max(1, kv_cache.parallel) + RUNTIME_BYTES
        total += 4 * N_UBATCH * ((facts.n_vocab or 32000) + n_ctx * (facts.n_head or 8) // 2)
        if total <= budget * FITS_SHARE and scale < 1:
            return quant
    return None


def suggest_n_ctx(
    facts: ArchFacts, machine: MachineFacts, n_ctx: int, n_gpu_layers: int, kv_cache: KvCache = F16_CACHE
) -> int | None:
    """A smaller context (a power of two, at least 2048) that makes the model fit, if one does."""
    candidate = 1 << (max(n_ctx - 1, 1)).bit_length() - 1
    while candidate >= 2048:
        if candidate < n_ctx and _fits(facts, machine, candidate, n_gpu_layers, kv_cache):
            return candidate
        candidate //= 2
    return None


def estimate_with_draft(
    facts: ArchFacts,
    machine: MachineFacts,
    *,
    n_ctx: int | None,
    n_gpu_layers: int | None,
    kv_cache: KvCache,
    draft: ArchFacts | None,
) -> MemoryEstimate:
    """``estimate_memory`` plus a draft model kept beside it in RAM with its own f16 cache of every slot."""
    memory = estimate_memory(facts, machine, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, kv_cache=kv_cache)
    if draft is None:
        return memory
    draft_kv = KvCache(parallel=kv_cache.parallel)
    extra = estimate_memory(draft, machine, n_ctx=memory.n_ctx, n_gpu_layers=0, kv_cache=draft_kv)
    return replace(memory, draft_bytes=extra.total_bytes, ram_bytes=memory.ram_bytes + extra.total_bytes)


def automatic_parallel(
    facts: ArchFacts,
    machine: MachineFacts,
    *,
    n_ctx: int | None = None,
    n_gpu_layers: int | None = None,
    kv_cache: KvCache = F16_CACHE,
    draft: ArchFacts | None = None,
) -> int:
    """The slots an automatic ``parallel`` setting gets: AUTO_PARALLEL when the model with that many slots'
    caches fits this machine (the fit check's "fits"), else 1 (Ollama's rule for OLLAMA_NUM_PARALLEL; 4 is
    also LM Studio's and llama-server's default).

    Memory decides, not cores: decoding 4 rows together gains on one core as on two (llama-batched-bench,
    SmolLM2-135M on the 2-core build machine: 1.32x one sequence's tokens/s with 1 thread, 1.40x with 2).
    """
    slots = replace(kv_cache, parallel=AUTO_PARALLEL)
    memory = estimate_with_draft(
        facts, machine, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, kv_cache=slots, draft=draft
    )
    return AUTO_PARALLEL if memory_verdict(memory, machine) == "fits" else 1


def fit_advice(
    facts: ArchFacts,
    machine: MachineFacts,
    *,
    name: str = "This model",
    n_ctx: int | None = None,
    n_gpu_layers: int | None = None,
    kv_cache: KvCache = F16_CACHE,
    draft: ArchFacts | None = None,
) -> FitAdvice:
    """The verdict, its message and suggestions for loading ``facts`` with these settings (and ``draft``, a
    draft model the llama.cpp loader keeps beside it in RAM with its own cache of every slot's context; the
    suggestions are for the model itself)."""
    memory = estimate_with_draft(
        facts, machine, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, kv_cache=kv_cache, draft=draft
    )
    verdict = memory_verdict(memory, machine)
    ctx = memory.n_ctx
    ngl = n_gpu_layers if n_gpu_layers is not None else 0
    layers = suggest_gpu_layers(facts, machine, ctx, kv_cache) if verdict != "fits" else None
    quant = suggest_quantization(facts, machine, ctx, kv_cache) if verdict != "fits" else None
    smaller_ctx = suggest_n_ctx(facts, machine, ctx, ngl, kv_cache) if verdict != "fits" else None
    available = machine.available_ram_bytes + (machine.free_vram_bytes if memory.gpu_bytes else 0)
    where = "RAM + VRAM" if memory.gpu_bytes else "RAM"
    message = (
        f"{name} needs about {gb(memory.total_bytes)} (weights {gb(memory.weights_bytes)}, KV cache "
        f"{gb(memory.kv_cache_bytes)} at n_ctx={ctx}{kv_cache.describe()}, overhead {gb(memory.overhead_bytes)}"
        f"{f', draft model {gb(memory.draft_bytes)}' if memory.draft_bytes else ''}); "
        f"{gb(available)} {where} available: {verdict}."
    )
    tips = []
    if quant:
        tips.append(quant if facts.format == "gguf" else f"a {quant} GGUF of this model")
    if layers and layers != ngl:
        tips.append(f"n_gpu_layers={layers}")
    if smaller_ctx:
        tips.append(f"n_ctx={smaller_ctx}")
    if tips:
        message += " Try " + " or ".join(tips) + "."
    return FitAdvice(verdict, message, memory, layers, quant, smaller_ctx)


def advice_dict(advice: FitAdvice, speed: SpeedEstimate | None) -> dict[str, object]:
    """JSON-ready estimate, for `webui models inspect` and the page."""
    memory = asdict(advice.memory)
    memory["total_bytes"] = advice.memory.total_bytes
    data: dict[str, object] = {
        "memory": memory,
        "verdict": advice.verdict,
        "message": advice.message,
        "suggestions": {
            "n_gpu_layers": advice.suggested_n_gpu_layers,
            "quantization": advice.suggested_quantization,
            "n_ctx": advice.suggested_n_ctx,
        },
    }
    if speed is not None:
        data["speed"] = {
            "tokens_per_second": round(speed.tokens_per_second, 1),
            "tokens_per_second_full_context": round(speed.tokens_per_second_full_context, 1),
            "bound": speed.bound,
            "ms_per_token": {
                "memory": round(speed.memory_seconds * 1e3, 2),
                "compute": round(speed.compute_seconds * 1e3, 2),
                "gpu": round(speed.gpu_seconds * 1e3, 2),
                "overhead": round(speed.overhead_seconds * 1e3, 2),
            },
        }
    return data


def quick_fit(file_size_bytes: int, *, context_length: int | None = None) -> FitVerdict:
    """A fit verdict from a file size alone (used before a file is downloaded).

    Without the header, the KV cache is guessed from the size: a 4-bit 7B model (~4 GB) with grouped-query
    attention keeps about 128 KB per context token, and that grows roughly with the square root of the size.
    """
    from webui.core.hardware.machine import query_gpus, read_meminfo

    if file_size_bytes < 0:
        raise ValueError("A file size cannot be negative.")
    _total, available = read_meminfo()
    vram = sum(gpu.free_bytes for gpu in query_gpus())
    ctx = context_length or 4096
    kv = int(128 * 1024 * (max(file_size_bytes, 1) / 4e9) ** 0.5 * ctx)
    needed = file_size_bytes + kv + RUNTIME_BYTES + 4 * N_UBATCH * 64000
    budget = available + vram
    if budget <= 0:
        return FitVerdict("tight", f"Needs about {gb(needed)}; the available memory could not be read.")
    verdict = _verdict_for(needed, budget)
    where = "RAM + VRAM" if vram else "RAM"
    return FitVerdict(
        verdict, f"Needs about {gb(needed)} at {ctx} tokens of context; {gb(budget)} {where} available."
    )
