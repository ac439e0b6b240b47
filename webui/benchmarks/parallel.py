"""Parallel slots through the HTTP API: N concurrent clients vs one client sending the same requests in turn.

The server runs the llama.cpp loader with ``parallel`` slots (the most clients measured), so N clients at once
are decoded together, one batch per step. Prompts have mixed lengths (a short question, a paragraph to
summarise, a longer text to continue); each side sends the same requests, and the rounds alternate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from webui.benchmarks.figures import Figure, Target, figure, interleave, median, paired_ratio
from webui.benchmarks.server import ServeProcess, Streamed, client_load, stream_timed

CLIENTS = (1, 2, 4, 8)
_PARAGRAPH = (
    "The lighthouse keeper climbed the narrow stairs every evening, lit the great lamp and watched the ships "
    "pass through the strait. Storms came in autumn, and with them the wrecks he could not prevent. "
)


def _prompt(index: int, run: str) -> str:
    """Mixed lengths: every third request is short, one medium, one long. ``run`` (side and round, the same
    length for every run) opens each prompt, so no run reuses another's cached prompt."""
    kind = index % 3
    if kind == 0:
        body = f"Request {index}: name a colour and a fruit."
    elif kind == 1:
        body = f"Request {index}: summarise this.\n{_PARAGRAPH * 2}"
    else:
        body = f"Request {index}: continue this story.\n{_PARAGRAPH * 6}"
    return f"{run}<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n"


def _one(client: httpx.Client, url: str, prompt: str, tokens: int) -> Streamed:
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ban_eos_token": True}
    return stream_timed(client, f"{url}/v1/completions", body)


def _load(url: str, clients: int, tokens: int, *, at_once: bool, run: str) -> dict[str, float]:
    """``clients`` requests, all at once from their own connections or one after another from one;
    aggregate generated tokens/s over the wall time."""
    return client_load(
        lambda client, index: _one(client, url, _prompt(index, run), tokens), clients, at_once=at_once
    )


def _side(url: str, clients: int, tokens: int, *, at_once: bool) -> Callable[[int], dict[str, float]]:
    name = "many" if at_once else "one "

    def run(number: int) -> dict[str, float]:
        return _load(url, clients, tokens, at_once=at_once, run=f"{name} {clients} {number:02d} ")

    return run


def compare(
    user_data: Path,
    model: str,
    settings: Sequence[str],
    log: Path,
    *,
    clients: Sequence[int] = CLIENTS,
    tokens: int = 64,
    rounds: int = 3,
) -> tuple[list[Figure], dict[str, Any]]:
    """Serve ``model`` with ``max(clients)`` slots and measure every client count against one in turn."""
    slots = max(clients)
    args = ["--model", model]
    for setting in (*settings, f"parallel={slots}"):
        args += ["--setting", setting]
    server = ServeProcess(user_data, args, log)
    server.start()
    figures: list[Figure] = []
    details: dict[str, Any] = {"slots": slots}
    try:
        _load(server.url, slots, 4, at_once=True, run="warm-up ")  # every slot once
        for count in clients:
            runs = interleave(
                {
                    "one": _side(server.url, count, tokens, at_once=False),
                    "many": _side(server.url, count, tokens, at_once=True),
                },
                rounds,
            )
            many = median(r["tps"] for r in runs["many"])
            one = median(r["tps"] for r in runs["one"])
            errors = sum(r["errors"] for r in (*runs["many"], *runs["one"]))
            target = Target("ratio_at_least", 1.7) if count >= 8 else None
            figures.append(
                figure(
                    "parallel",
                    f"{count} concurrent clients, aggregate",
                    many,
                    "tok/s",
                    reference=one,
                    reference_name="1 client, same requests in turn",
                    target=target,
                    samples=rounds,
                    paired_ratio=paired_ratio(runs, "many", "one", "tps"),
                    note=f"{errors:g} failed requests" if errors else "",
                )
            )
            details[f"clients_{count}"] = runs
    finally:
        server.stop()
    return figures, details
