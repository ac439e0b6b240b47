"""Transformers: Palabre's loader vs raw ``model.generate`` on the same folder, the same weights and threads.

Both sides use the very model object Palabre loaded (so dtype, device and threads match), greedy, with the end
tokens kept from ending the reply early: raw via ``min_new_tokens``, Palabre via ``ban_eos_token``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from webui.benchmarks.figures import Figure, figure, interleave, medians, paired_ratio
from webui.core.loader import CancelToken
from webui.core.params import GenerationParams

PROMPT = "<|im_start|>user\n{opener}: tell me a story about a small robot.<|im_end|>\n<|im_start|>assistant\n"


def _prompt(number: int) -> str:
    return PROMPT.format(opener=f"Story {number}")


def run_raw(model: Any, tokenizer: Any, prompt: str, tokens: int) -> dict[str, float]:
    import torch

    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **ids,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    total = time.perf_counter() - start
    produced = int(out.shape[1] - ids["input_ids"].shape[1])
    return {"tps": produced / total if total else 0.0}


def run_palabre(model: Any, prompt: str, tokens: int) -> dict[str, float]:
    params = GenerationParams(temperature=0, max_new_tokens=tokens, ban_eos_token=True, add_bos_token=False)
    start = time.perf_counter()
    produced = sum(chunk.tokens for chunk in model.stream(prompt, params, CancelToken()))
    total = time.perf_counter() - start
    return {"tps": produced / total if total else 0.0}


def compare(folder: Path, *, threads: int, tokens: int, rounds: int) -> tuple[list[Figure], dict[str, Any]]:
    from loaders.transformers import TransformersLoader, TransformersSettings

    loaded = TransformersLoader().load(folder, TransformersSettings(n_threads=threads, device="cpu"))
    try:
        raw_model, tokenizer = loaded._model, loaded._tokenizer
        sides = {
            "raw": lambda n: run_raw(raw_model, tokenizer, _prompt(n), tokens),
            "palabre": lambda n: run_palabre(loaded, _prompt(n), tokens),
        }
        for side in sides.values():
            side(999)  # warm-up
        runs = interleave(sides, rounds)
    finally:
        loaded.unload()
    summary = {name: medians(r) for name, r in runs.items()}
    return [
        figure(
            "transformers",
            f"generation ({folder.name}, whole reply)",
            summary["palabre"]["tps"],
            "tok/s",
            reference=summary["raw"]["tps"],
            reference_name="raw generate",
            samples=rounds,
            paired_ratio=paired_ratio(runs, "palabre", "raw", "tps"),
        )
    ], {"medians": summary, "runs": runs}
