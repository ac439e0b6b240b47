"""An API request's reply with the server's tools: the page's ToolLoop run for a client that cannot approve.

When the user lets API clients use the page's tools (Tools panel, off by default), a chat request gets those
tools (``Toolbox.api_tools``: the ones that need no approval) on top of its own. ``ApiToolReply`` runs the
page's ToolLoop with the client's tools as ``client``: a call of a server tool runs here, its result goes
back to the model and the model is asked again (at most the loop's round limit); a call of one of the
client's tools ends the reply and reaches the client as any tool call does. The client sees one reply:

- every round's answer and reasoning text, in order (a blank line between rounds' texts), and the calls of
  its own tools; the server tools' calls and results are not shown (``steps`` holds them);
- one finish reason at the end (the last round's: ``tool_calls`` when its own tools were called);
- the token counts summed over the rounds (``stats``).

Plain Python: iterate it for Chunks, as a ReplyStream. The first round starts when it is made (the API makes
it while it holds the model); the later ones start as the client reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from webui.core.agent.base import Tool
from webui.core.agent.loop import Decision, ToolLoop, ToolStep
from webui.core.loader import Chunk, FinishReason, GenerationStats, PromptUsage, ToolCallDelta
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, ReplyStream, Service
from webui.core.tools.request import ToolRequest

ROUND_BREAK = "\n\n"


class Unattended:
    """The approver of an API request: nobody can be asked. The tools it runs were chosen to need no asking
    (``Toolbox.api_tools``); any other call is rejected, never run."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = frozenset(allowed)

    def pending(self, step: ToolStep) -> bool:
        return step.name not in self.allowed

    def ask(self, step: ToolStep) -> Decision:
        return "reject"


def offers_server_tools(client: ToolRequest | None) -> bool:
    """Whether a request with the client's ``client`` tools may get the server's: not when it forces a call
    of its own tools (``required`` or a named one) or asks for none (``tool_choice: none``)."""
    return client is None or client.choice == "auto"


def summed_stats(stats: Sequence[GenerationStats]) -> GenerationStats | None:
    """The rounds' counts as one generation's: prompt and new tokens added up, the first token's time of the
    first round, the total time of all."""
    if not stats:
        return None
    return GenerationStats(
        prompt=PromptUsage(sum(s.prompt_tokens for s in stats), sum(s.reused_prompt_tokens for s in stats)),
        new_tokens=sum(s.new_tokens for s in stats),
        time_to_first_token_s=stats[0].time_to_first_token_s,
        total_s=sum(s.total_s for s in stats),
    )


class ApiToolReply:
    """One API reply that may call the server's ``tools`` (and the client's ``client`` tools): iterate for the
    client's chunks; ``finish_reason``, ``stats``, ``stop_string``, ``params`` and ``cancel`` as a job's."""

    def __init__(
        self,
        service: Service,
        tools: Sequence[Tool],
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        *,
        client: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        origin: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        approver = Unattended([tool.spec.name for tool in tools])
        self.loop = ToolLoop(service, tools, approver, client=client, every_chunk=True)
        self._history = list(history)
        self._settings = settings
        self._params = params
        self._template_kwargs = template_kwargs
        self._origin = origin  # labels the later rounds' jobs as the first's (the API's, its request id)
        self.first = service.stream_chat_reply(
            history,
            settings,
            params,
            tools=self.loop.request("none" if self.loop.max_rounds == 0 else "auto"),
            template_kwargs=template_kwargs,
        )
        self._streams: list[ReplyStream] = [self.first]
        # The extensions' errors of every round (the first's list, which the API follows as it grows).
        self.warnings = self.first.warnings
        self._finish: FinishReason | None = None
        self._ended = False

    # -- the job's side ----------------------------------------------------------------------------------

    @property
    def steps(self) -> list[ToolStep]:
        """The server's tool calls that ran (or were refused), in order."""
        return [step for round_ in self.loop.rounds for step in round_.steps]

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._finish

    @property
    def stats(self) -> GenerationStats | None:
        return summed_stats([s.stats for s in self._streams if s.stats is not None])

    @property
    def stop_string(self) -> str | None:
        return self._current.job.stop_string

    @property
    def params(self) -> GenerationParams:
        return self._current.job.params

    @property
    def _current(self) -> ReplyStream:
        stream = self.loop.stream
        return stream if stream is not None else self.first

    def cancel(self) -> None:
        self.loop.cancel()
        self.first.cancel()  # also before the loop has begun reading it

    # -- the client's chunks -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Chunk]:
        if self._ended:
            return
        self._ended = True
        # Whether text (reasoning) was sent yet, and whether a new round began since: set apart by a blank line.
        sent_text = sent_reasoning = text_break = reasoning_break = False
        held: dict[int, list[ToolCallDelta]] = {}  # a call's pieces until its name says whose tool it is
        theirs: dict[int, bool] = {}
        updates = self.loop.run(
            self._history,
            self._settings,
            self._params,
            template_kwargs=self._template_kwargs,
            first=self.first,
        )
        for update in self._labelled(updates):
            if update.kind == "round":
                text_break, reasoning_break, held, theirs = sent_text, sent_reasoning, {}, {}
                continue
            chunk = update.chunk
            if chunk is None:
                continue
            stream = self.loop.stream  # the round's (its stats count)
            if stream is not None and all(stream is not known for known in self._streams):
                self._streams.append(stream)
            text, reasoning = chunk.text, chunk.reasoning
            if text and text_break:
                text, text_break = ROUND_BREAK + text, False
            if reasoning and reasoning_break:
                reasoning, reasoning_break = ROUND_BREAK + reasoning, False
            sent_text, sent_reasoning = sent_text or bool(text), sent_reasoning or bool(reasoning)
            calls = self._clients_calls(chunk.tool_calls, held, theirs)
            if text or reasoning or calls or chunk.logprobs:
                yield Chunk(
                    text,
                    tokens=chunk.tokens,
                    reasoning=reasoning,
                    tool_calls=calls,
                    prompt=chunk.prompt,
                    logprobs=chunk.logprobs,
                )
            if chunk.finish_reason is not None:
                self._finish = chunk.finish_reason
        for stream in self._streams[1:]:
            for warning in stream.warnings:
                if warning not in self.warnings:
                    self.warnings.append(warning)
        if self.loop.handed_back:
            self._finish = "tool_calls"
        elif self._finish == "tool_calls":  # ended (e.g. Stop) after server calls: none is the client's
            self._finish = "stop"
        yield Chunk(finish_reason=self._finish or "stop", stats=self.stats)

    def _labelled(self, updates: Iterator[Any]) -> Iterator[Any]:
        """``updates``, each pulled inside the request's origin (the later rounds' jobs are submitted then)."""
        if self._origin is None:
            yield from updates
            return
        while True:
            with self._origin():
                update = next(updates, None)
            if update is None:
                return
            yield update

    def _clients_calls(
        self, deltas: Sequence[ToolCallDelta], held: dict[int, list[ToolCallDelta]], theirs: dict[int, bool]
    ) -> tuple[ToolCallDelta, ...]:
        """The pieces of the client's own calls among ``deltas`` (the server's are dropped); a call's pieces
        wait until its name has come (a call's first piece names it)."""
        out: list[ToolCallDelta] = []
        for delta in deltas:
            if delta.index not in theirs:
                waiting = held.setdefault(delta.index, [])
                waiting.append(delta)
                name = "".join(piece.name for piece in waiting)
                if not name:
                    continue
                theirs[delta.index] = self.loop.is_clients(name)  # else the loop runs (or refuses) it
                del held[delta.index]
                if theirs[delta.index]:
                    out.extend(waiting)
                continue
            if theirs[delta.index]:
                out.append(delta)
        return tuple(out)
