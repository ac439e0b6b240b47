"""Raw llama-cpp-python vs Palabre's engine vs Palabre's streaming HTTP API, interleaved, same prompt and threads.

Each round uses a prompt that differs from the others in its first word, so no side reuses an evaluated prefix
from an earlier round: every side evaluates the whole prompt (prompt tokens/s) and then generates the same number
of tokens greedily with the end-of-generation tokens banned (generation tokens/s).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from webui.benchmarks.figures import Figure, Target, figure, interleave, medians, paired_ratio
from webui.benchmarks.server import ServeProcess, stream_timed
from webui.core.params import GenerationParams

N_CTX = 2048
OPENERS = (
    "Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliett", "Kilo",
    "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo", "Sierra", "Tango", "Uniform", "Victor",
)  # fmt: skip
_TASK = (
    "Write a detailed essay about the history of the city of Paris, from Roman times to today. Cover its "
    "architecture (the Roman baths, the Gothic cathedrals, Haussmann's boulevards, the Eiffel Tower and the "
    "modern towers of La Defense), its politics (the kings, the revolutions of 1789, 1830 and 1848, the Commune, "
    "the occupation and the liberation), its art (the salons, the impressionists, the cubists, the cafes of "
    "Montparnasse and the writers who lived there), its science and its universities, its food and markets, its "
    "river and bridges, and the daily life of the people who lived there in each century. Give dates, names and "
    "places, and explain how each period shaped the city that visitors see today. "
)


def prompt_for(round_number: int, *, short: bool = False) -> str:
    """A ChatML prompt of about 350 tokens (``short``: about 30) whose first word differs per round (so no
    prefix is reused)."""
    opener = OPENERS[round_number % len(OPENERS)] + str(round_number // len(OPENERS) or "")
    task = _TASK.split(". ")[0] + "." if short else _TASK * 2
    return f"<|im_start|>user\n{opener}. {task}<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class LlamaSetup:
    """What both sides share: the GGUF file, threads, context, tokens per run and rounds."""

    model: Path
    threads: int
    batch_threads: int
    tokens: int
    rounds: int
    short_prompt: bool = False  # for a quick generation-only check: the prompt then costs little time


def _rates(prompt_tokens: int, produced: int, first: float, total: float) -> dict[str, float]:
    return {
        "gen_tps": (produced - 1) / (total - first) if produced > 1 and total > first else 0.0,
        "prompt_tps": prompt_tokens / first if first else 0.0,
        "ttft_s": first,
    }


def raw_llama(setup: LlamaSetup) -> Any:
    import llama_cpp

    return llama_cpp.Llama(
        str(setup.model),
        n_ctx=N_CTX,
        n_threads=setup.threads,
        n_threads_batch=setup.batch_threads,
        flash_attn=True,  # as Palabre's default (auto), so both sides run the same attention kernels
        verbose=False,
    )


def run_raw(llm: Any, prompt: str, tokens: int) -> dict[str, float]:
    """llama-cpp-python's own generate loop, turning each token into text as any real use does."""
    llm.reset()
    prompt_tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    start = time.perf_counter()
    first = 0.0
    produced = 0
    for token in llm.generate(prompt_tokens, temp=0.0, top_k=1, reset=True):
        llm.detokenize([token])
        produced += 1
        if produced == 1:
            first = time.perf_counter() - start
        if produced >= tokens:
            break
    return _rates(len(prompt_tokens), produced, first, time.perf_counter() - start)


def run_engine(service: Any, prompt: str, tokens: int) -> dict[str, float]:
    """Through Palabre's Engine: its job queue, worker thread, stop-string matcher and loader."""
    params = GenerationParams(temperature=0, max_new_tokens=tokens, ban_eos_token=True)
    start = time.perf_counter()
    first = 0.0
    produced = 0
    job = service.engine.submit(prompt, params)
    for chunk in job:
        if chunk.tokens:
            produced += chunk.tokens
            if not first:
                first = time.perf_counter() - start
    stats = job.stats
    return _rates(stats.prompt_tokens if stats else 0, produced, first, time.perf_counter() - start)


def run_api(client: httpx.Client, url: str, prompt: str, tokens: int) -> dict[str, float]:
    """Through ``POST /v1/completions`` with ``stream: true``, timed by the client as it reads the events."""
    seen = stream_timed(
        client,
        f"{url}/v1/completions",
        {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ban_eos_token": True},
    )
    return {
        "gen_tps": seen.gen_tps,
        "prompt_tps": seen.prompt_tokens / seen.ttft_s if seen.ttft_s else 0.0,
        "ttft_s": seen.ttft_s,
    }


def compare(
    setup: LlamaSetup, service: Any, server: ServeProcess | None, *, include_api: bool = True
) -> tuple[list[Figure], dict[str, Any]]:
    """Warm every side up, then ``rounds`` interleaved rounds; figures are medians, ratios against raw."""
    llm = raw_llama(setup)
    client = httpx.Client(timeout=600)
    try:
        sides: dict[str, Any] = {
            "raw": lambda n: run_raw(llm, prompt_for(n, short=setup.short_prompt), setup.tokens),
            "engine": lambda n: run_engine(service, prompt_for(n, short=setup.short_prompt), setup.tokens),
        }
        if include_api and server is not None:
            sides["api"] = lambda n: run_api(
                client, server.url, prompt_for(n, short=setup.short_prompt), setup.tokens
            )
        for name, side in sides.items():  # warm-up: first-call costs (page faults, caches) paid by nobody
            side(1000 + len(name))
        runs = interleave(sides, setup.rounds)
    finally:
        client.close()
        llm.close()
    summary: dict[str, Mapping[str, float]] = {name: medians(r) for name, r in runs.items()}
    return _figures(summary, runs, setup.rounds), {"medians": summary, "runs": runs}


def _figures(
    summary: Mapping[str, Mapping[str, float]],
    runs: Mapping[str, Sequence[Mapping[str, float]]],
    rounds: int,
) -> list[Figure]:
    raw = summary["raw"]
    out: list[Figure] = []
    labels = {"engine": "engine", "api": "streaming API"}
    # (metric, label, unit, target): the speeds have the 0.97 target, the first-token time is shown only.
    metrics: tuple[tuple[str, str, str, Target | None], ...] = (
        ("gen_tps", "generation", "tok/s", Target("ratio_at_least", 0.97)),
        ("prompt_tps", "prompt", "tok/s", Target("ratio_at_least", 0.97)),
        ("ttft_s", "time to first token", "s", None),
    )
    for side in ("engine", "api"):
        if side not in summary:
            continue
        out += [
            figure(
                "llama.cpp",
                f"{labels[side]} {label}",
                summary[side][metric],
                unit,
                reference=raw[metric],
                reference_name="raw",
                target=target,
                samples=rounds,
                paired_ratio=paired_ratio(runs, side, "raw", metric),
            )
            for metric, label, unit, target in metrics
        ]
    return out
