"""Turn a conversation into the prompt text for the three chat modes, dropping old turns to fit the context.

- ``instruct``: the messages go through the model's instruction template, as the model was trained.
- ``chat``: a plain transcript (``You: ...`` / ``Assistant: ...``) after the character's context; works with
  base models too.
- ``chat-instruct``: the chat transcript is wrapped in a command ("write the next reply for <character>") and
  sent as one user message through the instruction template; the assistant turn is then opened with
  ``<character>:`` so the model answers in character and its reply reads like the next transcript line.

Truncation drops whole turns (a user message and the replies after it), oldest first, until the prompt fits;
the system message / character context and the last turn always stay. It renders O(log n) times, not O(n).
Turns are dropped in blocks of about a quarter of the budget, cut at points fixed by the conversation's start,
so the kept prefix stays the same for many turns and the loader can reuse its evaluated prefix (dropping one
turn at a time would shift the prefix, and re-evaluate the whole history, on every turn).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from webui.core.media import Image
from webui.core.prompt_content import ImageSlots, typed_content
from webui.core.templates.store import InstructionTemplate, TemplateError, TemplateOutputTooLargeError
from webui.core.tools.formats import detect_tool_format
from webui.core.tools.writing import calls_as_text, mistral_id

Mode = Literal["instruct", "chat", "chat-instruct"]
Role = Literal["system", "user", "assistant", "tool"]
MODES: tuple[Mode, ...] = ("instruct", "chat", "chat-instruct")
DEFAULT_CHAT_INSTRUCT_COMMAND = (
    'Continue the chat dialogue below. Write a single reply for the character "<|character|>".\n\n<|prompt|>'
)
# Marks where to cut a rendered template; a private-use character cannot come from a tokenizer's text.
_CUT = "\ue000palabre-cut\ue000"
_PLACEHOLDER = re.compile(r"\{\{(char|user)\}\}|<BOT>|<USER>", re.IGNORECASE)
_COMMAND_FIELD = re.compile(r"<\|character\|>|<\|prompt\|>")


class PromptError(ValueError):
    """A request that cannot be turned into a prompt (missing template, nothing to continue, ...)."""


class PromptTooLongError(PromptError):
    """Even the system/context block with only the last turn does not fit in the prompt budget."""


@dataclass(frozen=True)
class ToolCall:
    """A tool call an assistant message made: ``arguments`` is a JSON object text (as OpenAI's API carries it)."""

    id: str
    name: str
    arguments: str = "{}"

    def arguments_object(self) -> Any:
        """The arguments as a value (a dict for any well-formed call); the text itself if it is not JSON."""
        try:
            return json.loads(self.arguments or "{}")
        except ValueError:
            return self.arguments


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation.

    ``reasoning`` is a thinking model's reasoning before ``content`` (kept apart: it is shown, not sent back on
    later turns); ``tool_calls`` are an assistant's calls; a ``tool`` message answers the call ``tool_call_id``
    of the tool ``name``.
    """

    role: Role
    content: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    # Images shown with the message (a user's, mostly); the prompt gets the loader's media marker for each.
    images: tuple[Image, ...] = ()


@dataclass(frozen=True)
class PromptRequest:
    """Everything that decides the prompt text; see the module docstring for the modes."""

    messages: Sequence[ChatMessage]
    mode: Mode = "instruct"
    template: InstructionTemplate | None = None  # required for instruct and chat-instruct
    system_message: str = ""  # goes first, as role "system", in instruct and chat-instruct
    character_name: str = "Assistant"
    user_name: str = "You"
    context: str = ""  # chat-mode persona description; {{char}}, {{user}}, <BOT>, <USER> are filled in
    chat_instruct_command: str = DEFAULT_CHAT_INSTRUCT_COMMAND
    continue_last: bool = False  # extend the last assistant reply without closing it
    impersonate: bool = False  # write the user's next message instead of the character's
    bos_token: str = ""  # passed to the template; chat mode leaves BOS to the tokenizer
    eos_token: str = ""
    # OpenAI-shaped tool definitions ({type: function, function: {name, description, parameters}}), given to
    # the template as ``tools`` (instruct mode).
    tools: tuple[Mapping[str, Any], ...] = ()
    # More template variables: the thinking controls, then a request's chat_template_kwargs.
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # The loaded model's media marker (a vision model's): each message's images become one marker each,
    # before its text. Empty: images are not rendered (the caller refuses them for a model that cannot see).
    media_marker: str = ""


@dataclass(frozen=True)
class BuiltPrompt:
    """The prompt text and what the caller needs to run it."""

    text: str
    stop_strings: tuple[str, ...]  # extra stops implied by the mode, e.g. chat: ("\nYou:",)
    dropped_messages: int  # how many old messages truncation removed
    prompt_tokens: int
    # For a model that applies its own chat template: the conversation to send (``text`` is then only a
    # readable rendering of it, used to count tokens and to show the prompt).
    messages: tuple[ChatMessage, ...] | None = None
    warnings: tuple[str, ...] = ()  # extensions that failed while the prompt was built (named in each)
    # The images whose markers ``text`` holds, in the order of the markers (those truncation kept).
    images: tuple[Image, ...] = ()


Turn = list[ChatMessage]


def reply_reserve(context: int, max_new_tokens: int) -> int:
    """Tokens of the context kept free for the reply: max_new_tokens, but at most half the context.

    A small-context model (or a large max_new_tokens) would otherwise leave no room for any prompt; the loader
    still stops the reply where the context ends.
    """
    return min(max_new_tokens, context // 2)


def build_prompt(
    request: PromptRequest,
    *,
    count_tokens: Callable[[str], int],
    max_prompt_tokens: int,
    image_tokens: Callable[[Image], int] | None = None,
) -> BuiltPrompt:
    """Build the prompt for ``request``, dropping the oldest turns until ``count_tokens(text)`` fits.

    With ``request.media_marker`` the messages' images are rendered as that marker, counted with
    ``image_tokens`` (each image's context positions), and the kept ones are returned in marker order.
    Raises PromptError for an impossible request, PromptTooLongError when even the last turn does not fit,
    and TemplateError when the instruction template fails.
    """
    _validate(request)
    slots = ImageSlots(request.messages, request.media_marker) if request.media_marker else None
    if slots is not None:
        request = replace(request, messages=slots.messages)
        count_tokens = slots.counter(count_tokens, image_tokens or (lambda image: 0))
    system, turns = _split(request.messages)
    if request.mode == "instruct":
        stops: tuple[str, ...] = ()
        render = _instruct_renderer(request, system)
    else:
        stops = (f"\n{request.user_name}:",)
        if request.impersonate:
            stops += (f"\n{request.character_name}:",)
        chat_renderer = _chat_renderer if request.mode == "chat" else _chat_instruct_renderer
        render = chat_renderer(request, system)
    text, dropped_turns, tokens = _fit(turns, render, count_tokens, max_prompt_tokens)
    dropped = sum(len(turn) for turn in turns[:dropped_turns])
    images: tuple[Image, ...] = ()
    if slots is not None:
        text, images = slots.finish(text)
    return BuiltPrompt(
        text=text, stop_strings=stops, dropped_messages=dropped, prompt_tokens=tokens, images=images
    )


def build_messages(
    request: PromptRequest, *, count_tokens: Callable[[str], int], max_prompt_tokens: int
) -> BuiltPrompt:
    """The conversation as role-tagged messages, for a model that applies its own chat template.

    The modes map onto roles: instruct sends the turns as they are after the system message; chat sends the
    character context as the system message; chat-instruct sends the wrapped transcript as one user
    message. Old turns are dropped as in ``build_prompt``, counted on a plain rendering of the messages.
    """
    if request.impersonate:
        raise PromptError(
            "Impersonate needs a prompt Palabre renders itself; this model applies its own chat template "
            "(use the completions endpoint)."
        )
    _validate(request, needs_template=False)
    system, turns = _split(request.messages)
    if request.mode == "instruct":
        stops: tuple[str, ...] = ()
        system_text = "\n\n".join(part for part in (request.system_message, system) if part)
        head = [ChatMessage("system", system_text)] if system_text else []

        def messages_for(kept: list[Turn]) -> list[ChatMessage]:
            return head + _flatten(kept)

    elif request.mode == "chat":
        stops = (f"\n{request.user_name}:",)
        block = _context_block(request, system)
        head = [ChatMessage("system", block)] if block else []

        def messages_for(kept: list[Turn]) -> list[ChatMessage]:
            return head + _flatten(kept)

    else:
        stops = (f"\n{request.user_name}:",)
        head = [ChatMessage("system", request.system_message)] if request.system_message else []
        block = _context_block(request, system)

        def messages_for(kept: list[Turn]) -> list[ChatMessage]:
            messages = _flatten(kept)
            partial = ""
            if request.continue_last:
                messages, partial = messages[:-1], messages[-1].content
            command = _chat_instruct_command(request, block, messages, request.character_name)
            opened = [ChatMessage("assistant", partial)] if partial else []
            return [*head, ChatMessage("user", command), *opened]

    def render(kept: list[Turn]) -> str:
        return "".join(f"{m.role}: {m.content}\n\n" for m in messages_for(kept))

    text, dropped_turns, tokens = _fit(turns, render, count_tokens, max_prompt_tokens)
    dropped = sum(len(turn) for turn in turns[:dropped_turns])
    messages = tuple(messages_for(turns[dropped_turns:]))
    return BuiltPrompt(
        text=text, stop_strings=stops, dropped_messages=dropped, prompt_tokens=tokens, messages=messages
    )


def _validate(request: PromptRequest, *, needs_template: bool = True) -> None:
    if request.mode not in MODES:
        raise PromptError(f"Unknown chat mode {request.mode!r}; use one of: {', '.join(MODES)}.")
    if needs_template and request.mode != "chat" and request.template is None:
        raise PromptError(f"The {request.mode} mode needs an instruction template.")
    if request.continue_last and request.impersonate:
        raise PromptError("Continue and impersonate cannot be combined.")
    if request.continue_last and (not request.messages or request.messages[-1].role != "assistant"):
        raise PromptError("There is no reply to continue: the last message is not from the assistant.")


def _split(messages: Sequence[ChatMessage]) -> tuple[str, list[Turn]]:
    """Leading system messages (joined) and the turns after them; a turn starts at each user message."""
    index = 0
    system_parts = []
    while index < len(messages) and messages[index].role == "system":
        system_parts.append(messages[index].content)
        index += 1
    turns: list[Turn] = []
    for message in messages[index:]:
        if message.role == "user" or not turns:
            turns.append([message])  # a greeting before the first user message is a turn of its own
        else:
            turns[-1].append(message)
    return "\n\n".join(part for part in system_parts if part), turns


def _fit(
    turns: list[Turn], render: Callable[[list[Turn]], str], count_tokens: Callable[[str], int], budget: int
) -> tuple[str, int, int]:
    """Render with the fewest oldest turns dropped so that the text fits ``budget`` tokens.

    Fewer messages never make a longer prompt, so the number to drop is found by binary search.
    Returns (text, dropped turns, tokens).
    """

    def attempt(dropped: int) -> tuple[str, int | None]:
        try:
            text = render(turns[dropped:])
        except TemplateOutputTooLargeError:
            return "", None  # larger than any context window: certainly does not fit
        tokens = count_tokens(text)
        return text, tokens

    text, tokens = attempt(0)
    if tokens is not None and tokens <= budget:
        return text, 0, tokens
    last = max(len(turns) - 1, 0)
    if last > 0:
        text, tokens = attempt(last)
    if tokens is None or tokens > budget:
        need = "more text than a template may produce" if tokens is None else f"{tokens} tokens"
        raise PromptTooLongError(
            f"The prompt does not fit: the system message or character context plus the last message take "
            f"{need}, but only {budget} tokens are available. Shorten them, or raise the context length "
            f"or lower the number of new tokens."
        )
    fits, fails = last, 0  # invariant: dropping `fits` turns fits, dropping `fails` does not
    best = (text, tokens)
    while fits - fails > 1:
        middle = (fits + fails) // 2
        candidate, candidate_tokens = attempt(middle)
        if candidate_tokens is not None and candidate_tokens <= budget:
            fits, best = middle, (candidate, candidate_tokens)
        else:
            fails = middle
    block_end = _block_cut(turns, fits, last, budget)
    if block_end != fits:
        candidate, candidate_tokens = attempt(block_end)
        # The cut points come from a characters-per-token guess; if it dropped far too much, keep the minimum.
        if candidate_tokens is not None and candidate_tokens >= budget * MIN_KEPT_SHARE:
            return candidate, block_end, candidate_tokens
    return best[0], fits, best[1]


# Blocks of about a quarter of the budget: at ~4 characters per token that is one character per budget token.
BLOCK_CHARS_PER_BUDGET_TOKEN = 1.0
MIN_KEPT_SHARE = 0.5  # a block cut may leave no less than this share of the budget in use
_TURN_OVERHEAD_CHARS = 16  # role markers and separators the template adds around each message


def _block_cut(turns: list[Turn], minimum: int, last: int, budget: int) -> int:
    """The first block boundary at or after ``minimum`` dropped turns (at most ``last``).

    Boundaries sit where the characters of the turns from the conversation's start cross a multiple of the
    block size, so they do not move as new turns are appended: the same number of turns is dropped, and the
    kept prefix stays identical, until the conversation outgrows the next block.
    """
    if minimum <= 0:
        return minimum
    block = max(1.0, budget * BLOCK_CHARS_PER_BUDGET_TOKEN)
    dropped_chars = 0
    for index in range(last):
        before = dropped_chars
        dropped_chars += sum(len(m.content) + _TURN_OVERHEAD_CHARS for m in turns[index])
        crossed = int(dropped_chars // block) > int(before // block)
        if index + 1 >= minimum and crossed:
            return index + 1
    return last


def _flatten(turns: list[Turn]) -> list[ChatMessage]:
    return [message for turn in turns for message in turn]


def _as_dicts(
    messages: Sequence[ChatMessage], *, string_arguments: bool = False, typed: bool = False
) -> list[dict[str, Any]]:
    """Messages as chat templates read them (HF's shape).

    Reasoning goes back only for the assistant messages after the last user message: within a tool loop
    (gpt-oss needs its analysis there, Qwen3 keeps it); earlier turns' reasoning is never sent again.
    Tool-call arguments are objects (what most templates iterate or ``tojson``), or their JSON text.
    """
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        content: Any = [{"type": "text", "text": message.content}] if typed else message.content
        item: dict[str, Any] = {"role": message.role, "content": content}
        if message.reasoning and message.role == "assistant" and index > last_user:
            item["reasoning_content"] = message.reasoning
            item["thinking"] = message.reasoning
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": call.arguments if string_arguments else call.arguments_object(),
                    },
                }
                for call in message.tool_calls
            ]
        if message.role == "tool":
            item["tool_call_id"] = message.tool_call_id
            if message.name:
                item["name"] = message.name
        out.append(item)
    return out


_RESERVED_VARIABLES = frozenset({"messages", "add_generation_prompt", "tools", "bos_token", "eos_token"})


def _calls_for_template(source: str, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Tool calls in the shape ``source`` can show: Mistral's ids where its template demands them, and the
    calls written into the content (in the family's syntax) for a template that never reads ``tool_calls``."""
    family = detect_tool_format(source)
    reads_calls = "tool_calls" in source
    # Kimi K2 names each call "functions.NAME:INDEX" and its results by that id.
    kimi_ids: dict[str, str] = {}
    out = []
    for message in messages:
        if family == "kimi":
            for call in message.tool_calls:
                kimi_ids.setdefault(call.id, f"functions.{call.name}:{len(kimi_ids)}")
            message = replace(
                message,
                tool_calls=tuple(replace(call, id=kimi_ids[call.id]) for call in message.tool_calls),
                tool_call_id=kimi_ids.get(message.tool_call_id, message.tool_call_id),
            )
        if family == "mistral":
            calls = tuple(replace(call, id=mistral_id(call.id)) for call in message.tool_calls)
            message = replace(
                message,
                tool_calls=calls,
                tool_call_id=mistral_id(message.tool_call_id) if message.tool_call_id else "",
            )
        if message.tool_calls and not reads_calls:
            written = calls_as_text(family, [(c.name, c.arguments_object()) for c in message.tool_calls])
            content = f"{message.content}\n{written}" if message.content else written
            message = replace(message, content=content, tool_calls=())
        out.append(message)
    return out


def _render(
    template: InstructionTemplate,
    messages: Sequence[ChatMessage],
    request: PromptRequest,
    *,
    add_generation_prompt: bool,
) -> str:
    """Render through ``template`` with the request's tools and variables.

    Tool-call arguments go in as objects; a template that fails on them (one that parses the JSON text
    itself) gets the text instead, so each template receives the form it expects.
    """
    # A request's variables never replace what the render itself sets (the messages, the generation prompt).
    variables = {k: v for k, v in request.template_kwargs.items() if k not in _RESERVED_VARIABLES}
    if request.tools:
        variables["tools"] = [dict(tool) for tool in request.tools]
    variables.update(bos_token=request.bos_token, eos_token=request.eos_token)
    has_calls = any(message.tool_calls for message in messages)
    if has_calls or any(message.tool_call_id for message in messages):
        messages = _calls_for_template(template.source, messages)
    # A template that iterates content parts (SmolVLM's) gets each text as a text part.
    typed = typed_content(template)
    try:
        return template.render(
            _as_dicts(messages, typed=typed), add_generation_prompt=add_generation_prompt, **variables
        )
    except TemplateOutputTooLargeError:
        raise
    except TemplateError:
        if not has_calls:
            raise
    return template.render(
        _as_dicts(messages, string_arguments=True, typed=typed),
        add_generation_prompt=add_generation_prompt,
        **variables,
    )


# ---------------------------------------------------------------------------------------------------------
# instruct


def _instruct_renderer(request: PromptRequest, system: str) -> Callable[[list[Turn]], str]:
    template = request.template
    assert template is not None  # checked by _validate
    system_text = "\n\n".join(part for part in (request.system_message, system) if part)
    head = [ChatMessage("system", system_text)] if system_text else []

    def render(turns: list[Turn]) -> str:
        messages = head + _flatten(turns)
        if request.continue_last:
            return _render_open_reply(template, messages, request)
        if request.impersonate:
            rendered = _render(
                template, [*messages, ChatMessage("user", _CUT)], request, add_generation_prompt=False
            )
            cut = rendered.rfind(_CUT)
            if cut < 0:
                raise PromptError(
                    f'Template "{template.name}" does not show user messages; cannot impersonate.'
                )
            return rendered[:cut]
        return _render(template, messages, request, add_generation_prompt=True)

    return render


def _render_open_reply(
    template: InstructionTemplate, messages: list[ChatMessage], request: PromptRequest
) -> str:
    """Render with the last (assistant) message left open: the text ends right after its content."""
    last = messages[-1]
    marked = [*messages[:-1], replace(last, content=last.content + _CUT)]
    rendered = _render(template, marked, request, add_generation_prompt=False)
    cut = rendered.rfind(_CUT)
    if cut >= 0:
        return rendered[:cut]
    # The template drops the last reply (some strip assistant turns): open a new reply and put the text in.
    return _render(template, messages[:-1], request, add_generation_prompt=True) + last.content


# ---------------------------------------------------------------------------------------------------------
# chat and chat-instruct


def _fill_placeholders(text: str, request: PromptRequest) -> str:
    def value(match: re.Match[str]) -> str:
        word = match.group(0).lower()
        return request.character_name if word in {"{{char}}", "<bot>"} else request.user_name

    return _PLACEHOLDER.sub(value, text)


def _context_block(request: PromptRequest, system: str) -> str:
    """The character context (placeholders filled) and any leading system message, as one block."""
    parts = [_fill_placeholders(request.context, request).strip(), system.strip()]
    return "\n\n".join(part for part in parts if part)


def _transcript(messages: Sequence[ChatMessage], request: PromptRequest) -> list[str]:
    names = {"user": request.user_name, "assistant": request.character_name}
    return [
        f"{names[message.role]}: {message.content}" if message.role in names else message.content
        for message in messages
    ]


def _chat_renderer(request: PromptRequest, system: str) -> Callable[[list[Turn]], str]:
    block = _context_block(request, system)
    head = f"{block}\n\n" if block else ""

    def render(turns: list[Turn]) -> str:
        messages = _flatten(turns)
        if request.continue_last:
            lines = _transcript(messages[:-1], request)
            partial = messages[-1].content
            tail = f"{request.character_name}: {partial}" if partial else f"{request.character_name}:"
        else:
            lines = _transcript(messages, request)
            tail = f"{request.user_name if request.impersonate else request.character_name}:"
        return head + "".join(f"{line}\n" for line in lines) + tail

    return render


def _chat_instruct_command(
    request: PromptRequest, block: str, messages: Sequence[ChatMessage], speaker: str
) -> str:
    """The chat-instruct command with the context block and transcript filled in."""
    lines = _transcript(messages, request)
    transcript = "\n".join(([block, ""] if block else []) + lines)
    fields = {"<|character|>": speaker, "<|prompt|>": transcript}
    # One pass, so a transcript that happens to contain "<|character|>" is left alone.
    return _COMMAND_FIELD.sub(lambda match: fields[match.group(0)], request.chat_instruct_command)


def _chat_instruct_renderer(request: PromptRequest, system: str) -> Callable[[list[Turn]], str]:
    template = request.template
    assert template is not None  # checked by _validate
    # Leading system messages belong to the transcript's context here; the template's system message is
    # the instruct-mode one.
    head = [ChatMessage("system", request.system_message)] if request.system_message else []
    block = _context_block(request, system)
    speaker = request.user_name if request.impersonate else request.character_name

    def render(turns: list[Turn]) -> str:
        messages = _flatten(turns)
        partial = ""
        if request.continue_last:
            messages, partial = messages[:-1], messages[-1].content
        command = _chat_instruct_command(request, block, messages, speaker)
        rendered = _render(
            template, [*head, ChatMessage("user", command)], request, add_generation_prompt=True
        )
        return rendered + (f"{speaker}: {partial}" if partial else f"{speaker}:")

    return render
