"""Through the HTTP API: a growing conversation (turn N vs turn 1) and the queue under concurrent clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from webui.benchmarks.figures import Figure, Target, figure, interleave, median, paired_ratio
from webui.benchmarks.llama import OPENERS
from webui.benchmarks.server import ServeProcess, Streamed, client_load, stream_timed

MILESTONES = (1, 10, 25, 50)


def user_message(turn: int) -> str:
    """The same length at every turn, so turn N's first token waits only for what is new."""
    return f"Question {turn:03d}: tell me one short fact about the number {turn:03d}, please."


def system_message(number: int) -> str:
    """Differs from its first word on, so a new chat never reuses another chat's evaluated prompt."""
    return f"{OPENERS[number % len(OPENERS)]} session. You are a helpful assistant."


def conversation(server: ServeProcess, turns: int, reply_tokens: int, number: int) -> list[Streamed]:
    """One chat of ``turns`` turns through ``POST /v1/chat/completions``; what the client saw at each turn."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system_message(number)}]
    seen: list[Streamed] = []
    with httpx.Client(timeout=600) as client:
        for turn in range(1, turns + 1):
            messages.append({"role": "user", "content": user_message(turn)})
            reply = stream_timed(
                client,
                f"{server.url}/v1/chat/completions",
                {"messages": messages, "max_tokens": reply_tokens, "temperature": 0, "ban_eos_token": True},
            )
            seen.append(reply)
            messages.append({"role": "assistant", "content": reply.text})
    return seen


def multi_turn(
    server: ServeProcess,
    *,
    conversations: int,
    reply_tokens: int = 24,
    turns: int = MILESTONES[-1],
    raw: Callable[[int], dict[str, float]] | None = None,
) -> tuple[list[Figure], dict[str, Any]]:
    """Time to first token at turns 1, 10, 25, 50 (medians over ``conversations`` runs).

    Turn 1 is the noisiest reference of all (one short request), so a few more new chats add samples to it.
    """
    runs = [conversation(server, turns, reply_tokens, number) for number in range(conversations)]
    extra_first_turns = [
        conversation(server, 1, reply_tokens, number)[0].ttft_s
        for number in range(conversations, conversations + 3)
    ]
    ttft = {turn: median(run[turn - 1].ttft_s for run in runs) for turn in range(1, turns + 1)}
    ttft[1] = median([run[0].ttft_s for run in runs] + extra_first_turns)
    shown = sorted(
        {turn for turn in MILESTONES if turn <= turns} | {turns}
    )  # the last turn carries the target
    prompt_tokens = {turn: runs[0][turn - 1].prompt_tokens for turn in shown}
    figures = [
        figure(
            "multi-turn",
            f"turn {turn} time to first token",
            ttft[turn],
            "s",
            reference=ttft[1],
            reference_name="turn 1",
            target=Target("ratio_at_most", 1.3) if turn == turns else None,
            samples=conversations,
            note=f"{prompt_tokens[turn]} prompt tokens",
        )
        for turn in shown
        if turn > 1
    ]
    late = [ttft[turn] for turn in range(max(2, turns - 9), turns + 1)]
    if late:
        figures.append(
            figure(
                "multi-turn",
                f"turns {max(2, turns - 9)}-{turns} time to first token (median)",
                median(late),
                "s",
                reference=ttft[1],
                reference_name="turn 1",
                samples=conversations * len(late),
            )
        )
    details: dict[str, Any] = {"ttft_by_turn": ttft, "prompt_tokens": prompt_tokens}
    if raw is not None:
        growth = raw(runs[0][turns - 1].prompt_tokens)
        details["raw_context_growth"] = growth
        figures.append(
            figure(
                "multi-turn",
                f"raw llama.cpp: same new message after {growth['cached']:.0f} cached tokens",
                growth["late_s"],
                "s",
                reference=growth["first_s"],
                reference_name="after none",
                note="the backend's own growth (attention over the cache): the floor for the turn ratio",
            )
        )
    return figures, details


def raw_context_growth(
    model: Path, threads: int, batch_threads: int, cached_tokens: int, n_ctx: int, rounds: int = 3
) -> dict[str, float]:
    """What raw llama.cpp pays for the same new message after ``cached_tokens`` of history vs after none.

    Attention reads the whole cache for every new token, so even with a perfect prefix cache a late turn costs
    more than the first; this is the backend's own share of the turn-50 / turn-1 ratio.
    """
    import llama_cpp

    llm = llama_cpp.Llama(
        str(model),
        n_ctx=n_ctx,
        n_threads=threads,
        n_threads_batch=batch_threads,
        flash_attn=True,
        verbose=False,
    )
    try:
        history = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 400, add_bos=False)
        new = llm.tokenize(
            f"<|im_end|>\n<|im_start|>user\n{user_message(50)}<|im_end|>\n<|im_start|>assistant\n".encode(),
            add_bos=False,
            special=True,
        )
        cached = max(0, min(cached_tokens - len(new), n_ctx - len(new) - 8, len(history)))

        def timed_new_message() -> float:
            start = time.perf_counter()
            llm.eval(new)
            llm.sample(temp=0.0)
            return time.perf_counter() - start

        def keep(tokens: int) -> None:  # forget everything after the first ``tokens`` of the cache
            llm._ctx.kv_cache_seq_rm(-1, tokens, -1)
            llm.n_tokens = tokens

        first = []
        for _ in range(rounds):
            keep(0)
            first.append(timed_new_message())
        keep(0)
        llm.eval(history[:cached])  # once: evaluating it again per round would cost minutes on a busy machine
        late = []
        for _ in range(rounds):
            keep(cached)
            late.append(timed_new_message())
    finally:
        llm.close()
    return {"first_s": median(first), "late_s": median(late), "cached": float(cached)}


def _one_request(client: httpx.Client, server: ServeProcess, index: int, tokens: int) -> Streamed:
    return stream_timed(
        client,
        f"{server.url}/v1/completions",
        {
            "prompt": f"<|im_start|>user\nClient {index}: write a story about a lighthouse.<|im_end|>\n"
            "<|im_start|>assistant\n",
            "max_tokens": tokens,
            "temperature": 0,
            "ban_eos_token": True,
        },
    )


def _requests(server: ServeProcess, clients: int, tokens: int, *, at_once: bool) -> dict[str, float]:
    """The requests of ``clients`` clients (each its own prompt), all at once from their own connections or one
    after another from one client; aggregate tokens/s over the wall time.

    Both ways send the same prompts, so the prompt evaluation each one needs is the same: the difference is
    what serving them concurrently (the queue, interleaved streams) costs.
    """
    return client_load(
        lambda client, index: _one_request(client, server, index, tokens), clients, at_once=at_once
    )


def queue(
    server: ServeProcess, *, clients: int = 8, tokens: int = 32, rounds: int = 2
) -> tuple[list[Figure], dict[str, Any]]:
    """``clients`` clients at once vs one client sending the same requests one after another, interleaved;
    tokens/s counts every generated token."""
    _requests(server, 1, 4, at_once=False)  # warm-up
    runs = interleave(
        {
            "one": lambda n: _requests(server, clients, tokens, at_once=False),
            "many": lambda n: _requests(server, clients, tokens, at_once=True),
        },
        rounds,
    )
    one = median(r["tps"] for r in runs["one"])
    many = median(r["tps"] for r in runs["many"])
    errors = sum(r["errors"] for r in runs["many"])
    figures = [
        figure(
            "queue",
            f"{clients} concurrent clients, aggregate",
            many,
            "tok/s",
            reference=one,
            reference_name="1 client, same requests in turn",
            target=Target("ratio_at_least", 0.95),
            samples=rounds,
            paired_ratio=paired_ratio(runs, "many", "one", "tps"),
        ),
        figure(
            "queue",
            f"{clients} concurrent clients, failed requests",
            errors,
            "requests",
            target=Target("value_at_most", 0),
            samples=rounds * clients,
        ),
    ]
    return figures, {"runs": runs}
