"""Parallel slots through the HTTP API: N concurrent clients vs one client sending the same requests in turn.

The server runs the llama.cpp loader with ``parallel`` slots (the most clients measured), so N clients at once
are decoded together, one batch per step. Prompts have mixed lengths (a short question, a paragraph to
summarise, a longer text to continue) in three loads (see ``LOADS``): chat-sized prompts for 1, 2, 4 and 8
clients, then with the most clients long prompts, and follow-up turns of chats whose history each server already
holds in a slot (``FOLLOW_UP``). Each side sends the same requests, and the rounds alternate.

With ``llama_server`` (llama.cpp's C++ server) the same load also goes to ``llama-server -np N``, running at the
same time and measured in the same interleaved rounds (with the most clients also one client in turn, for
llama-server's own gain), and one client alone streams from Palabre (its default, automatic slots: 4 where they
fit) and from ``llama-server -np 1``, with one thread and with every core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from webui.benchmarks.figures import Figure, Target, figure, interleave, median, paired_ratio
from webui.benchmarks.llama_server import LlamaServerProcess, batched_bench
from webui.benchmarks.server import ServeProcess, Streamed, client_load, serve_args, stream_timed

CLIENTS = (1, 2, 4, 8)
_PARAGRAPH = (
    "The lighthouse keeper climbed the narrow stairs every evening, lit the great lamp and watched the ships "
    "pass through the strait. Storms came in autumn, and with them the wrecks he could not prevent. "
)
# Paragraphs in the medium and long prompts of each load: "chat" (a question, a paragraph to summarise, two to
# continue: about 25, 60 and 100 tokens, so generation takes most of the time) and "long" (about 25, 110 and 270 tokens: prompt evaluation, which batching cannot speed up
# on a small CPU, takes about half).
LOADS: dict[str, tuple[int, int]] = {"chat": (1, 2), "long": (2, 6), "follow-up": (1, 2)}
# The follow-up load: each chat opens with a request of the chat load and a written reply, evaluated (untimed,
# one token asked) just before the timed requests, which add the next question: only it is new to the server's
# slot, as when the chats of a household or an agent's conversations go on. The chat's name comes first, so a
# chat's history shares next to nothing with another chat's and each server keeps every chat in its own slot.
FOLLOW_UP = "follow-up"
# How each load's figures are named.
_LOAD_NAMES = {"chat": "", "long": ", long prompts", FOLLOW_UP: ", follow-up turns"}
_REPLY = "Gladly. Here is a first answer, in a few words; ask me if you would like more."
_NEXT = "Thank you. Now say more about it, in a longer answer."


def _history(index: int, run: str) -> str:
    """The follow-up load's first turn of chat ``index``: a chat-load request and its reply."""
    return f"Chat {index} of {run}\n{_turn(index, FOLLOW_UP)}<|im_start|>assistant\n{_REPLY}<|im_end|>"


def _follow_up(index: int, run: str) -> str:
    return f"{_history(index, run)}\n<|im_start|>user\n{_NEXT}<|im_end|>\n<|im_start|>assistant\n"


def _prompt(index: int, run: str, load: str = "chat") -> str:
    """Mixed lengths: every third request is short, one medium, one long. ``run`` (side and round, the same
    length for every run) opens each prompt, so no run reuses another's cached prompt."""
    if load == FOLLOW_UP:
        return _follow_up(index, run)
    return f"{run}{_turn(index, load)}<|im_start|>assistant\n"


def _turn(index: int, load: str) -> str:
    """Request ``index``'s user turn: a short question, a paragraph to summarise or a text to continue."""
    kind = index % 3
    medium, long = LOADS[load]
    if kind == 0:
        body = f"Request {index}: name a colour and a fruit."
    elif kind == 1:
        body = f"Request {index}: summarise this.\n{_PARAGRAPH * medium}"
    else:
        body = f"Request {index}: continue this story.\n{_PARAGRAPH * long}"
    return f"<|im_start|>user\n{body}<|im_end|>\n"


# How each server is told to run to the token budget: Palabre's sampler field, llama-server's own.
_NO_END = {"palabre": {"ban_eos_token": True}, "llama-server": {"ignore_eos": True}}


def _one(client: httpx.Client, url: str, prompt: str, tokens: int, kind: str = "palabre") -> Streamed:
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, **_NO_END[kind]}
    return stream_timed(client, f"{url}/v1/completions", body)


def _side(
    url: str, clients: int, tokens: int, *, at_once: bool, load: str, kind: str = "palabre"
) -> Callable[[int], dict[str, float]]:
    """``clients`` requests of ``load``, all at once from their own connections or one after another from one;
    aggregate generated tokens/s over the wall time."""
    name = f"{kind} {load} {'many' if at_once else 'one '} {clients}"

    def run(number: int) -> dict[str, float]:
        if load == FOLLOW_UP:  # each chat's first turn, into the server's slots (untimed)
            for index in range(clients):
                with httpx.Client(timeout=600) as client:
                    _one(client, url, _history(index, f"{name} {number:02d} "), 1, kind)
        return client_load(
            lambda client, index: _one(
                client, url, _prompt(index, f"{name} {number:02d} ", load), tokens, kind
            ),
            clients,
            at_once=at_once,
        )

    return run


def _single(url: str, tokens: int, kind: str, name: str) -> Callable[[int], dict[str, float]]:
    """One client alone: its generation rate as it reads the stream (the first token's wait excluded)."""

    def run(number: int) -> dict[str, float]:
        with httpx.Client(timeout=600) as client:
            seen = _one(client, url, _prompt(1, f"{name} {number:02d} ", "long"), tokens, kind)
        return {"gen_tps": seen.gen_tps}

    return run


def compare(
    user_data: Path,
    model: Path,
    settings: Sequence[str],
    log: Path,
    *,
    clients: Sequence[int] = CLIENTS,
    tokens: int = 64,
    rounds: int = 3,
    llama_server: Path | None = None,
    n_ctx: int = 2048,
    threads: tuple[int, int] = (1, 1),
    every_core: int = 1,
) -> tuple[list[Figure], dict[str, Any]]:
    """Serve ``model`` with ``max(clients)`` slots and measure every client count against one in turn (and
    against ``llama-server -np N`` when given); then one client alone against llama-server."""
    slots = max(clients)
    server = ServeProcess(user_data, serve_args(model, [*settings, f"parallel={slots}"]), log)
    reference = (
        LlamaServerProcess(
            llama_server,
            model,
            slots=slots,
            n_ctx=n_ctx,
            threads=threads[0],
            batch_threads=threads[1],
            log=log,
        )
        if llama_server is not None
        else None
    )
    figures: list[Figure] = []
    details: dict[str, Any] = {"slots": slots}
    try:
        server.start()
        if reference is not None:
            reference.start()
            _side(reference.url, slots, 4, at_once=True, load="chat", kind="llama-server")(99)
        _side(server.url, slots, 4, at_once=True, load="chat")(99)  # warm-up: every slot once
        # Every client count on the chat load; the long and follow-up loads with the most clients only.
        for load, count in [*(("chat", c) for c in clients), ("long", slots), (FOLLOW_UP, slots)]:
            sides = {
                "one": _side(server.url, count, tokens, at_once=False, load=load),
                "many": _side(server.url, count, tokens, at_once=True, load=load),
            }
            if reference is not None:
                sides["llama-server"] = _side(
                    reference.url, count, tokens, at_once=True, load=load, kind="llama-server"
                )
                if count == slots:  # llama-server's own gain over one client in turn, for scale
                    sides["llama-server one"] = _side(
                        reference.url, count, tokens, at_once=False, load=load, kind="llama-server"
                    )
            runs = interleave(sides, rounds)
            figures += _count_figures(count, load, runs, rounds)
            details[f"{load}_clients_{count}"] = runs
    finally:
        server.stop()
        if reference is not None:
            reference.stop()
    batched = llama_server.with_name("llama-batched-bench") if llama_server is not None else None
    if batched is not None and batched.exists():
        for load in LOADS:
            ceiling, runs = _ceiling(batched, model, details[f"{load}_clients_{slots}"]["one"], load, slots,
                                     tokens, threads, n_ctx, rounds)  # fmt: skip
            figures.append(ceiling)
            details[f"{load}_llama_batched_bench"] = runs
    if llama_server is not None:
        for label, count in (("1 thread", 1), ("every core", every_core)):
            single, runs = _single_stream(
                user_data, model, settings, log, llama_server, n_ctx, count, tokens * 2, rounds, label
            )
            figures.append(single)
            details[f"single_{count}_threads"] = runs
    return figures, details


def _count_figures(
    count: int, load: str, runs: dict[str, list[dict[str, float]]], rounds: int
) -> list[Figure]:
    errors = sum(r["errors"] for side in runs.values() for r in side)
    note = f"{errors:g} failed requests" if errors else ""
    prompts = _LOAD_NAMES[load]

    def compared(name: str, side: str, other: str, reference_name: str, target: Target | None) -> Figure:
        return figure(
            "parallel",
            name,
            median(r["tps"] for r in runs[side]),
            "tok/s",
            reference=median(r["tps"] for r in runs[other]),
            reference_name=reference_name,
            target=target,
            samples=rounds,
            paired_ratio=paired_ratio(runs, side, other, "tps"),
            note=note,
        )

    # The targets, on the loads whose prompts are chat-sized (long prompts: for scale).
    ours = Target("ratio_at_least", 1.7) if count >= 8 and load != "long" else None
    near = Target("ratio_at_least", 0.9) if count >= 8 else None
    clients = f"{count} concurrent client{'s' if count > 1 else ''}"
    wanted = [
        ("many", "one", f"{clients}, aggregate", "1 client, same requests in turn", ours),
        ("many", "llama-server", f"{clients} vs llama-server -np {count}", f"llama-server, {clients}", near),
        ("llama-server", "llama-server one", f"llama-server: {clients}", "llama-server, 1 client in turn", None),
    ]  # fmt: skip
    return [
        compared(f"{name}{prompts}", side, other, reference_name, target)
        for side, other, name, reference_name, target in wanted
        if side in runs and other in runs
    ]


def _ceiling(
    binary: Path,
    model: Path,
    one: list[dict[str, float]],
    load: str,
    slots: int,
    tokens: int,
    threads: tuple[int, int],
    n_ctx: int,
    rounds: int,
) -> tuple[Figure, list[dict[str, float]]]:
    """What llama.cpp itself gains on the load's shape, with no server: ``llama-batched-bench`` decoding
    ``slots`` sequences together against one, each with the load's mean evaluated prompt (from Palabre's usage)
    and the same reply length. A chat's cached history is not in its context, so on the follow-up load this is
    a bound from above."""
    prompt = round(median(r["evaluated_prompt"] for r in one))
    runs = []
    for _ in range(max(1, min(rounds, 3))):
        many, alone = batched_bench(
            binary, model, prompt=prompt, tokens=tokens, sequences=slots, threads=threads[0],
            batch_threads=threads[1], n_ctx=n_ctx,
        )  # fmt: skip
        runs.append({"many": many, "one": alone})
    prompts = _LOAD_NAMES[load]
    return figure(
        "parallel",
        f"llama.cpp alone: {slots} sequences decoded together{prompts}",
        median(r["many"] for r in runs),
        "tok/s",
        reference=median(r["one"] for r in runs),
        reference_name="llama-batched-bench, 1 sequence, in turn",
        samples=len(runs),
        paired_ratio=median(r["many"] / r["one"] for r in runs),
        note=f"{prompt} prompt + {tokens} generated tokens each, no server (llama-batched-bench)",
    ), runs


def _single_stream(
    user_data: Path,
    model: Path,
    settings: Sequence[str],
    log: Path,
    llama_server: Path,
    n_ctx: int,
    threads: int,
    tokens: int,
    rounds: int,
    label: str,
) -> tuple[Figure, dict[str, Any]]:
    """One client streaming from Palabre (its default, automatic slots) and from ``llama-server -np 1``, both
    with ``threads``."""
    own = [s for s in settings if not s.startswith(("n_threads=", "n_threads_batch=", "parallel="))]
    own += [f"n_threads={threads}", f"n_threads_batch={threads}"]
    server = ServeProcess(user_data, serve_args(model, own), log)
    reference = LlamaServerProcess(
        llama_server, model, slots=1, n_ctx=n_ctx, threads=threads, batch_threads=threads, log=log
    )
    try:
        server.start()
        reference.start()
        sides = {
            "palabre": _single(server.url, tokens, "palabre", "single"),
            "llama-server": _single(reference.url, tokens, "llama-server", "single"),
        }
        for side in sides.values():
            side(99)  # warm-up
        runs = interleave(sides, rounds)
    finally:
        server.stop()
        reference.stop()
    single = figure(
        "parallel",
        f"1 client streaming, {label} ({threads})",
        median(r["gen_tps"] for r in runs["palabre"]),
        "tok/s",
        reference=median(r["gen_tps"] for r in runs["llama-server"]),
        reference_name="llama-server -np 1",
        target=Target("ratio_at_least", 0.95),
        samples=rounds,
        paired_ratio=paired_ratio(runs, "palabre", "llama-server", "gen_tps"),
    )
    return single, runs
