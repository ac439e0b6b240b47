"""Transformers: Palabre's loader vs raw ``model.generate`` on the same folder, the same weights and threads.

Both sides use the very model object Palabre loaded (so dtype, device and threads match), greedy, with the end
tokens kept from ending the reply early: raw via ``min_new_tokens``, Palabre via ``ban_eos_token``.

A second figure is a chat's next turn: the time to the first token of the next reply when the history was the
previous prompt, for Palabre (which reuses the evaluated prefix) and for raw ``generate`` (which evaluates it all).
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


TURN = (
    "<|im_start|>user\nChapter {number}: and what did the robot do next?<|im_end|>\n<|im_start|>assistant\n"
)
TURN_REPLY = "It went on exploring the old factory and found a friend.<|im_end|>\n"


def _history(number: int, turns: int = 6) -> str:
    """A conversation of ``turns`` exchanges ending with an open assistant turn (about 40 tokens a turn)."""
    return "".join(
        TURN.format(number=f"{number}.{turn}") + TURN_REPLY for turn in range(turns)
    ) + TURN.format(number=f"{number}.last")


def _next_turn(history: str) -> str:
    return history + TURN_REPLY + TURN.format(number="new")


def turn_raw(model: Any, tokenizer: Any, number: int) -> dict[str, float]:
    import torch

    ids = tokenizer(_next_turn(_history(number)), return_tensors="pt", add_special_tokens=False)
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return {"ttft_s": time.perf_counter() - start}


def turn_palabre(model: Any, number: int) -> dict[str, float]:
    params = GenerationParams(temperature=0, max_new_tokens=1, ban_eos_token=True, add_bos_token=False)
    for _ in model.stream(_history(number), params, CancelToken()):
        pass  # the previous turn: its prompt is now evaluated and kept
    start = time.perf_counter()
    reused = 0
    for chunk in model.stream(_next_turn(_history(number)), params, CancelToken()):
        reused = max(reused, chunk.prompt.reused if chunk.prompt else 0)
        if chunk.tokens:
            break
    return {"ttft_s": time.perf_counter() - start, "reused_tokens": float(reused)}


def compare(folder: Path, *, threads: int, tokens: int, rounds: int) -> tuple[list[Figure], dict[str, Any]]:
    from loaders.transformers import TransformersLoader, TransformersSettings

    loaded = TransformersLoader().load(folder, TransformersSettings(n_threads=threads, device="cpu"))
    try:
        raw_model, tokenizer = loaded._model, loaded._tokenizer
        sides = {
            "raw": lambda n: run_raw(raw_model, tokenizer, _prompt(n), tokens),
            "palabre": lambda n: run_palabre(loaded, _prompt(n), tokens),
        }
        turn_sides = {
            "raw": lambda n: turn_raw(raw_model, tokenizer, n),
            "palabre": lambda n: turn_palabre(loaded, n),
        }
        for side in (*sides.values(), *turn_sides.values()):
            side(999)  # warm-up
        runs = interleave(sides, rounds)
        turn_runs = interleave(turn_sides, rounds)
    finally:
        loaded.unload()
    summary = {name: medians(r) for name, r in runs.items()}
    turn_summary = {name: medians(r) for name, r in turn_runs.items()}
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
        ),
        figure(
            "transformers",
            "next chat turn, time to first token (history reused)",
            turn_summary["palabre"]["ttft_s"],
            "s",
            reference=turn_summary["raw"]["ttft_s"],
            reference_name="raw generate, whole prompt",
            samples=rounds,
            paired_ratio=paired_ratio(turn_runs, "palabre", "raw", "ttft_s"),
        ),
    ], {"medians": summary, "runs": runs, "turn_medians": turn_summary, "turn_runs": turn_runs}
