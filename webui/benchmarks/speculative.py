"""Speculative decoding: Palabre with prompt-lookup drafting vs raw llama-cpp-python without, greedy.

Two tasks, each one user message in the model's own chat template: editing code the message holds (the reply
repeats most of it: drafting's best case) and free writing (little to look up: drafting should cost next to
nothing). The edit is asked for in full (the whole module: up to ``EDIT_TOKENS``, the model ends it itself);
free writing runs to ``--tokens``. Each side generates greedily; the drafted reply must equal raw's and
Palabre's undrafted one token for token.
Palabre runs as ``webui serve`` twice, with ``draft_model=prompt-lookup`` and without, streamed through the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from webui.benchmarks.figures import Figure, Target, figure, interleave, median, paired_ratio
from webui.benchmarks.llama import LlamaSetup, raw_llama
from webui.benchmarks.server import ServeProcess, serve_args, stream_timed

CODE = '''import json
from pathlib import Path


class Inventory:
    """Items in a warehouse, saved as JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[str, int] = {}

    def load(self) -> None:
        if self.path.exists():
            self.items = json.loads(self.path.read_text())

    def save(self) -> None:
        self.path.write_text(json.dumps(self.items, indent=2))

    def add_item(self, name: str, count: int) -> None:
        self.items[name] = self.items.get(name, 0) + count

    def remove_item(self, name: str, count: int) -> None:
        left = self.items.get(name, 0) - count
        if left < 0:
            raise ValueError(f"only {self.items.get(name, 0)} {name} in stock")
        self.items[name] = left

    def total(self) -> int:
        return sum(self.items.values())

    def report(self) -> str:
        lines = [f"{name}: {count}" for name, count in sorted(self.items.items())]
        return "\\n".join(lines)
'''
_ESSAY = (
    "Write a long, vivid story about a lighthouse keeper on a small island who finds a message in a bottle, "
    "what the message says, the journey it starts and the people met on the way."
)


def _edit_request(opener: str) -> str:
    return (
        f"{opener}. Rename the method add_item to put and remove_item to take in this Python module. Reply "
        f"with the whole module in one code block and nothing else.\n\n```python\n{CODE}```"
    )


def _free_request(opener: str) -> str:
    return f"{opener}. {_ESSAY}"


TASKS: dict[str, Callable[[str], str]] = {"edit this code": _edit_request, "free writing": _free_request}
# The edited module is ~300 tokens for SmolLM2's tokenizer: room for all of it, so the task is the whole edit.
EDIT_TOKENS = 512


def chat_prompt(model: Path) -> Callable[[str], str]:
    """The model's own chat template (from its GGUF) around one user message; plain text when it has none."""
    from webui.core.models.discovery import gguf_metadata
    from webui.core.templates.store import InstructionTemplate

    source = gguf_metadata(model).chat_template
    if not source:
        return lambda request: f"{request}\n\n"
    template = InstructionTemplate("model", source, "model metadata")
    return lambda request: template.render([{"role": "user", "content": request}])


def _raw(llm: Any, prompt: str, tokens: int) -> dict[str, Any]:
    """llama-cpp-python's own greedy loop without drafting; the reply's text and its generation rate."""
    import llama_cpp

    llm.reset()
    prompt_tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    start = time.perf_counter()
    first = 0.0
    pieces: list[bytes] = []
    for token in llm.generate(prompt_tokens, temp=0.0, top_k=1, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        pieces.append(llm.detokenize([token]))
        if len(pieces) == 1:
            first = time.perf_counter() - start
        if len(pieces) >= tokens:
            break
    span = time.perf_counter() - start - first
    text = b"".join(pieces).decode("utf-8", errors="replace")
    return {"gen_tps": (len(pieces) - 1) / span if span > 0 else 0.0, "text": text, "tokens": len(pieces)}


def _api(url: str, prompt: str, tokens: int) -> dict[str, Any]:
    with httpx.Client(timeout=600) as client:
        seen = stream_timed(
            client,
            f"{url}/v1/completions",
            {"prompt": prompt, "max_tokens": tokens, "temperature": 0},
        )
    return {"gen_tps": seen.gen_tps, "text": seen.text, "tokens": seen.completion_tokens}


def compare(
    setup: LlamaSetup, user_data: Path, settings: Sequence[str], log: Path
) -> tuple[list[Figure], dict[str, Any]]:
    """Per task: raw, Palabre without drafting and Palabre with prompt lookup, interleaved."""
    servers = {
        "palabre": ServeProcess(user_data, serve_args(setup.model, settings), log),
        "lookup": ServeProcess(
            user_data, serve_args(setup.model, [*settings, "draft_model=prompt-lookup"]), log
        ),
    }
    llm = raw_llama(setup)
    wrap = chat_prompt(setup.model)
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    try:
        for server in servers.values():
            server.start()
        for task, make in TASKS.items():
            tokens = EDIT_TOKENS if task == "edit this code" else setup.tokens

            def prompt(number: int, make: Callable[[str], str] = make) -> str:
                return wrap(make(f"Round {number}"))

            sides: dict[str, Callable[[int], dict[str, Any]]] = {
                "raw": lambda n, prompt=prompt, tokens=tokens: _raw(llm, prompt(n), tokens),
                **{
                    name: lambda n, url=server.url, prompt=prompt, tokens=tokens: _api(url, prompt(n), tokens)
                    for name, server in servers.items()
                },
            }
            for side in sides.values():
                side(99)  # warm-up
            runs = interleave(sides, setup.rounds)
            same = {other: _same(runs, "lookup", other) for other in ("raw", "palabre")}
            figures += _figures(task, runs, setup.rounds, same)
            details[task] = {
                name: [{"gen_tps": r["gen_tps"], "tokens": r["tokens"]} for r in side]
                for name, side in runs.items()
            } | {
                "identical_to_raw": same["raw"],
                "identical_to_undrafted": same["palabre"],
                "sample_reply": runs["lookup"][0]["text"][:400],
            }
    finally:
        llm.close()
        for server in servers.values():
            server.stop()
    return figures, details


def _same(runs: dict[str, list[dict[str, Any]]], side: str, other: str) -> bool:
    return all(a["text"] == b["text"] for a, b in zip(runs[side], runs[other], strict=True))


def _figures(
    task: str, runs: dict[str, list[dict[str, Any]]], rounds: int, same: dict[str, bool]
) -> list[Figure]:
    raw = median(r["gen_tps"] for r in runs["raw"])
    # Raw evaluates each prompt whole; Palabre reuses the part a prompt shares with the last one, and a near
    # tie at the first token can then go either way (llama.cpp rounds a split prompt differently).
    note = "; ".join(
        f"greedy output {'identical to' if equal else 'DIFFERS from'} {name}"
        for name, equal in (("raw", same["raw"]), ("Palabre without drafting", same["palabre"]))
    )
    return [
        figure(
            "speculative",
            f"{task}: prompt lookup",
            median(r["gen_tps"] for r in runs["lookup"]),
            "tok/s",
            reference=raw,
            reference_name="raw llama-cpp-python, no drafting",
            target=Target("ratio_at_least", 1.5) if task == "edit this code" else None,
            samples=rounds,
            paired_ratio=paired_ratio(runs, "lookup", "raw", "gen_tps"),
            note=note,
        ),
        figure(
            "speculative",
            f"{task}: no drafting",
            median(r["gen_tps"] for r in runs["palabre"]),
            "tok/s",
            reference=raw,
            reference_name="raw llama-cpp-python, no drafting",
            samples=rounds,
            paired_ratio=paired_ratio(runs, "palabre", "raw", "gen_tps"),
        ),
    ]
