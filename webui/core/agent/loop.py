"""The tool loop: the model calls tools, they run (after the user approves those that are not read-only),
their results go back to the model, and it is asked again, until it answers or a round limit is reached.

Plain Python (no page): ``ToolLoop.run`` is a generator of updates the page shows as they come. Before a
tool that is not read-only runs, the loop yields an ``approval`` update and then asks its Approver, which
blocks until the user answers (``ApprovalGate`` is the page's). Nothing runs
without an answer; a rejection reaches the model as the tool's result ("The user rejected this call.").

The API runs the same loop for a client's request (webui.core.agent.api_reply): the client's own tools are
offered with the loop's (``client``), and a round that calls one of them ends the loop, its calls left for
the client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from webui.core.agent.base import REJECTED, Tool, run_tool
from webui.core.loader import Chunk
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage, ToolCall
from webui.core.service import ChatSettings, ReplyStream, Service
from webui.core.tools.request import ToolRequest

MAX_ROUNDS = 8
Decision = Literal["approve", "always", "reject"]
StepStatus = Literal["pending", "awaiting", "running", "done", "error", "rejected", "unknown"]
UpdateKind = Literal["text", "step", "approval", "round", "chunk"]


@dataclass
class ToolStep:
    """One call the model made and what became of it (``seconds``: how long the tool ran)."""

    id: str
    name: str
    arguments: str
    read_only: bool = True
    status: StepStatus = "pending"
    result: str = ""
    seconds: float | None = None


@dataclass
class ToolRound:
    """One generation of the loop: what the model wrote and thought before its calls, and the calls."""

    text: str = ""
    reasoning: str = ""
    steps: list[ToolStep] = field(default_factory=list)


@dataclass(frozen=True)
class LoopUpdate:
    """What changed: ``text`` (the answer or reasoning grew), ``step`` (a call's state), ``approval`` (the
    loop waits for the user's answer on ``step``), ``round`` (a new generation begins), ``chunk`` (a chunk
    without text: only for a loop made with ``every_chunk``). ``text`` and ``chunk`` updates carry the
    chunk."""

    kind: UpdateKind
    step: ToolStep | None = None
    chunk: Chunk | None = None


class Approver(Protocol):
    """Who approves calls of tools that are not read-only: ``pending`` says whether the user must be asked
    (False: already allowed, e.g. "Always for this tool") and marks the question open; ``ask`` blocks until
    the answer."""

    def pending(self, step: ToolStep) -> bool: ...

    def ask(self, step: ToolStep) -> Decision: ...


class ApprovalGate:
    """The user's answers for one chat session: ``ask`` blocks the loop until ``answer`` (or ``cancel``).

    "Always" approves the tool for the rest of the session."""

    def __init__(self) -> None:
        self.always: set[str] = set()
        self._lock = threading.Lock()
        self._answered = threading.Event()
        self._decision: Decision = "reject"
        self.waiting: ToolStep | None = None

    def __deepcopy__(self, memo: dict[int, object]) -> ApprovalGate:
        return ApprovalGate()  # a page session's gr.State gets its own

    def pending(self, step: ToolStep) -> bool:
        if step.name in self.always:
            return False
        with self._lock:
            self.waiting = step
            self._answered.clear()
        return True

    def ask(self, step: ToolStep) -> Decision:
        with self._lock:
            if self.waiting is None or self.waiting.id != step.id:
                self.waiting = step
                self._answered.clear()
        self._answered.wait()
        with self._lock:
            self.waiting = None
            decision = self._decision
        if decision == "always":
            self.always.add(step.name)
        return decision

    def answer(self, decision: Decision) -> bool:
        """Answer the waiting question; False when nothing waits."""
        with self._lock:
            if self.waiting is None:
                return False
            self._decision = decision
            self._answered.set()
            return True

    def cancel(self) -> None:
        """Stop waiting: the waiting call is rejected."""
        self.answer("reject")


def assistant_message(round_: ToolRound) -> ChatMessage:
    calls = tuple(ToolCall(s.id, s.name, s.arguments) for s in round_.steps)
    return ChatMessage("assistant", round_.text, reasoning=round_.reasoning, tool_calls=calls)


def result_messages(round_: ToolRound) -> list[ChatMessage]:
    return [ChatMessage("tool", s.result, tool_call_id=s.id, name=s.name) for s in round_.steps]


def round_messages(rounds: Sequence[ToolRound]) -> list[ChatMessage]:
    """Earlier rounds as the history the model is shown: each call message, then its results."""
    out: list[ChatMessage] = []
    for round_ in rounds:
        out.append(assistant_message(round_))
        out.extend(result_messages(round_))
    return out


class ToolLoop:
    """Run one reply with ``tools``: iterate ``run`` for updates; ``rounds`` (with calls) and ``answer`` hold
    the reply as it is, ``reasoning`` the answer's reasoning.

    ``client``: a caller's own tools (an API request's), offered along with ``tools``; a tool of ``tools``
    named like one of them is left out (the caller's wins). A round that calls one of the caller's tools
    ends the loop: ``handed_back`` holds those calls (the caller runs them), and the round's calls of
    ``tools`` do not run. ``every_chunk``: ``run`` also yields a ``chunk`` update for each chunk without text
    (tool-call pieces, the last chunk), so a caller can follow the stream as it is."""

    def __init__(
        self,
        service: Service,
        tools: Sequence[Tool],
        approver: Approver,
        *,
        max_rounds: int = MAX_ROUNDS,
        clock: Callable[[], float] = time.monotonic,
        client: ToolRequest | None = None,
        every_chunk: bool = False,
    ) -> None:
        self.service = service
        self.client = client
        theirs = set(client.names) if client is not None else set()
        self.tools: Mapping[str, Tool] = {
            tool.spec.name: tool for tool in tools if tool.spec.name not in theirs
        }
        self.every_chunk = every_chunk
        self.handed_back: list[ToolStep] = []
        self.approver = approver
        self.max_rounds = max_rounds
        self.clock = clock
        self.rounds: list[ToolRound] = []
        self.answer = ""
        self.reasoning = ""
        self.stream: ReplyStream | None = None
        self.cancelled = False
        self.warnings: list[str] = []

    def request(self, choice: str = "auto") -> ToolRequest | None:
        """The tools offered in a round (the caller's first, then the loop's), with ``choice``."""
        definitions = [t.spec.definition() for t in self.tools.values()]
        if self.client is None:
            return ToolRequest.build(definitions, choice) if definitions else None
        return ToolRequest.build([*self.client.definitions, *definitions], choice, self.client.parallel)

    def is_clients(self, name: str) -> bool:
        """Whether ``name`` is one of the caller's own tools (``client``)."""
        return self.client is not None and name in self.client.names

    def cancel(self) -> None:
        self.cancelled = True
        if self.stream is not None:
            self.stream.cancel()

    def run(
        self,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        *,
        continue_last: bool = False,
        template_kwargs: Mapping[str, Any] | None = None,
        first: ReplyStream | None = None,
    ) -> Iterator[LoopUpdate]:
        """The updates of one reply. ``first``: the first round's stream when the caller started it already
        (with ``request()``'s tools); ``template_kwargs`` go to every round's prompt."""
        messages = list(history)
        for number in range(self.max_rounds + 1):
            last = number == self.max_rounds
            if number:
                yield LoopUpdate("round")
            current = ToolRound()
            self.answer, self.reasoning = "", ""
            calls: dict[int, ToolStep] = {}
            if number == 0 and first is not None:
                stream = self.stream = first
            else:
                stream = self.stream = self.service.stream_chat_reply(
                    messages,  # past the round limit the tools are not offered (choice none): it answers
                    settings,
                    params,
                    continue_last=continue_last and number == 0,
                    tools=self.request("none" if last else "auto"),
                    template_kwargs=template_kwargs,
                )
            for chunk in stream:
                self.answer += chunk.text
                self.reasoning += chunk.reasoning
                for delta in chunk.tool_calls:
                    step = calls.setdefault(delta.index, ToolStep("", "", ""))
                    step.id += delta.id
                    step.name += delta.name
                    step.arguments += delta.arguments
                if chunk.text or chunk.reasoning:
                    yield LoopUpdate("text", chunk=chunk)
                elif self.every_chunk:
                    yield LoopUpdate("chunk", chunk=chunk)
            self.warnings.extend(stream.warnings)
            if not calls or self.cancelled:
                return  # the answer (or what was written before Stop)
            steps = [calls[i] for i in sorted(calls)]
            if any(self.is_clients(step.name) for step in steps):
                self.handed_back = [step for step in steps if self.is_clients(step.name)]
                return  # the caller runs its own tools
            current.text, current.reasoning = self.answer, self.reasoning
            current.steps = steps
            self.rounds.append(current)
            self.answer, self.reasoning = "", ""
            yield LoopUpdate("step")
            for step in current.steps:
                yield from self._run_step(step)
            if self.cancelled:
                return
            messages += [assistant_message(current), *result_messages(current)]

    def _run_step(self, step: ToolStep) -> Iterator[LoopUpdate]:
        tool = self.tools.get(step.name)
        if tool is None:
            step.status, step.result = "unknown", f"Error: there is no tool named {step.name!r}."
            yield LoopUpdate("step", step)
            return
        step.read_only = tool.spec.read_only
        if self.cancelled:
            step.status, step.result = "rejected", "The user stopped the reply before this call ran."
            yield LoopUpdate("step", step)
            return
        if not step.read_only and self.approver.pending(replace(step)):
            step.status = "awaiting"
            yield LoopUpdate("approval", step)
            decision = self.approver.ask(replace(step))
            if decision == "reject" or self.cancelled:
                step.status, step.result = "rejected", REJECTED
                yield LoopUpdate("step", step)
                return
        step.status = "running"
        yield LoopUpdate("step", step)
        started = self.clock()
        step.result, failed = run_tool(tool, step.arguments)
        step.seconds = self.clock() - started
        step.status = "error" if failed else "done"
        yield LoopUpdate("step", step)


@dataclass(frozen=True)
class ToolSession:
    """What a chat reply may use: the tools, who approves calls that are not read-only, how to stop waiting
    for that answer, and the round limit."""

    tools: Sequence[Tool]
    approver: Approver
    on_cancel: Callable[[], None] | None = None
    max_rounds: int = MAX_ROUNDS

    def loop(self, service: Service) -> ToolLoop:
        return ToolLoop(service, self.tools, self.approver, max_rounds=self.max_rounds)
