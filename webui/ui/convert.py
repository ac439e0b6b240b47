"""Pure conversions between widget values and core objects (no gradio import, so they unit-test fast).

Widget values -> GenerationParams / ChatSettings / loader settings, chat history <-> ChatMessage, and the
throttle that batches streamed text into page updates.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from webui.core.chats.records import Conversation, ConversationSummary, StoredMessage, ToolRoundRecord
from webui.core.documents.attach import Source, cited_sources
from webui.core.loader import Chunk
from webui.core.params import FieldSpec, GenerationParams, describe_validation_error
from webui.core.prompts import ChatMessage, Role
from webui.core.service import ChatSettings
from webui.ui.tool_steps import round_entries

DETECTED_TEMPLATE = "(detected)"
MODES: tuple[str, ...] = ("instruct", "chat", "chat-instruct")
# The page's reply updates at most every 100 ms (the first text at once): each update costs the server and the
# browser CPU that a small machine takes from generation, and 10 updates a second still reads as smooth.
UPDATE_INTERVAL_S = 0.1
GENERATING = "Generating…"  # the status while a reply streams
THINKING_TITLE = "Thinking…"  # the reasoning block's title while the model reasons

# {"role": ..., "content": ...}: the shape kept in the per-session history state; a thinking model's reply also
# has "reasoning" (the text before its answer) and "reasoning_seconds" (how long it thought, or None).
Message = dict[str, Any]


class InputError(ValueError):
    """A widget value that cannot be used; the message is meant for the user."""


# -- sampler parameters --------------------------------------------------------------------------------------


def format_list(items: Sequence[str]) -> str:
    """A list field as the text its textbox shows: one JSON list (keeps "\\n" and spaces visible)."""
    return json.dumps(list(items), ensure_ascii=False)


def parse_list(name: str, text: str | None) -> list[str]:
    """A list textbox: a JSON list of strings, or one item per line."""
    text = text or ""
    if not text.strip():
        return []
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{name}: not a valid JSON list ({exc}).") from exc
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise InputError(f'{name}: expected a JSON list of strings, like ["\\n", "###"].')
        return value
    return [line for line in text.splitlines() if line]


def format_mapping(mapping: Mapping[Any, Any]) -> str:
    """A mapping field (logit_bias) as JSON text; empty mapping = empty box."""
    return json.dumps({str(k): v for k, v in mapping.items()}) if mapping else ""


def parse_mapping(name: str, text: str | None) -> dict[str, Any]:
    """A mapping textbox: a JSON object (empty = no entries); keys and values are checked by the schema."""
    text = text or ""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{name}: not a valid JSON object ({exc}).") from exc
    if not isinstance(value, dict):
        raise InputError(f'{name}: expected a JSON object, like {{"50256": -100}}.')
    return value


def widget_value(spec: FieldSpec, value: Any) -> Any:
    """The value a field's widget shows for ``value`` (a GenerationParams attribute)."""
    if spec.kind == "list":
        return format_list(value)
    if spec.kind == "mapping":
        return format_mapping(value)
    return value


def widget_values(specs: Sequence[FieldSpec], params: GenerationParams) -> list[Any]:
    """Every widget's value for ``params``, in ``specs`` order."""
    return [widget_value(spec, getattr(params, spec.name)) for spec in specs]


def _number(spec: FieldSpec, value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{spec.name}: a number is required.")
    if spec.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)  # sliders hand back floats
    return value


def params_from_values(specs: Sequence[FieldSpec], values: Sequence[Any]) -> GenerationParams:
    """Widget values (``specs`` order) -> validated GenerationParams; InputError naming each bad field."""
    if len(specs) != len(values):
        raise InputError(f"Expected {len(specs)} parameter values, got {len(values)}.")
    data: dict[str, Any] = {}
    for spec, value in zip(specs, values, strict=True):
        if spec.kind == "list":
            data[spec.name] = parse_list(spec.name, value)
        elif spec.kind == "mapping":
            data[spec.name] = parse_mapping(spec.name, value)
        elif spec.kind in ("int", "float"):
            data[spec.name] = _number(spec, value)
        elif spec.kind == "bool":
            data[spec.name] = bool(value)
        else:
            data[spec.name] = "" if value is None else str(value)
    try:
        return GenerationParams.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"Invalid parameters: {describe_validation_error(exc)}") from exc


def not_used_label(name: str, loader: str | None, honoured: frozenset[str] | None) -> str:
    """A parameter widget's label, marked when the loaded model's loader ignores the field."""
    if loader is None or honoured is None or name in honoured:
        return name
    return f"{name} (not used by {loader})"


# -- chat -----------------------------------------------------------------------------------------------------


def chat_settings(
    mode: str,
    system_message: str | None,
    character_name: str | None,
    user_name: str | None,
    context: str | None,
    chat_instruct_command: str | None,
    template: str | None,
) -> ChatSettings:
    """The Chat tab's widgets -> ChatSettings (empty names fall back to the core defaults)."""
    if mode not in MODES:
        raise InputError(f"Unknown chat mode {mode!r}: use one of {', '.join(MODES)}.")
    defaults = ChatSettings()
    return ChatSettings(
        mode=typing.cast(Literal["instruct", "chat", "chat-instruct"], mode),
        template=None if not template or template == DETECTED_TEMPLATE else template,
        system_message=system_message or "",
        character_name=(character_name or "").strip() or defaults.character_name,
        user_name=(user_name or "").strip() or defaults.user_name,
        context=context or "",
        chat_instruct_command=chat_instruct_command or defaults.chat_instruct_command,
    )


def content_text(content: Any) -> str:
    """Message content as plain text: Gradio 6 may hand back a list of parts ``[{"type": "text", ...}]``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        if "text" in content:
            return str(content["text"])
        return str(content.get("content", ""))
    if isinstance(content, (list, tuple)):
        return "".join(content_text(part) for part in content)
    return str(content)


def normalize_history(messages: Iterable[Any] | None) -> list[Message]:
    """Any chat value (state, Chatbot value, dicts or ChatMessage-like objects) -> [{"role", "content"}]."""
    history: list[Message] = []
    for message in messages or ():
        if isinstance(message, Mapping):
            role, content = message.get("role"), message.get("content")
        else:
            role, content = getattr(message, "role", None), getattr(message, "content", None)
        if role not in ("user", "assistant", "system"):
            continue
        history.append({"role": str(role), "content": content_text(content)})
    return history


def to_chat_messages(history: Iterable[Any] | None) -> list[ChatMessage]:
    """The per-session history -> the core's ChatMessage list."""
    return [
        ChatMessage(role=typing.cast(Role, m["role"]), content=m["content"])
        for m in normalize_history(history)
    ]


def thought_title(seconds: float | None) -> str:
    """The title of a finished reasoning block: "Thought for 2.4 s" (or "Thoughts" when not measured)."""
    if seconds is None:
        return "Thoughts"
    seconds = max(seconds, 0.1)
    return f"Thought for {seconds:.1f} s" if seconds < 10 else f"Thought for {seconds:.0f} s"


_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_BACKTICKS = re.compile(r"`+")


def _escape_prose(text: str) -> str:
    """HTML-escape ``text`` except inside its Markdown code spans (the renderer escapes those itself)."""
    out: list[str] = []
    position = 0
    while (opening := _BACKTICKS.search(text, position)) is not None:
        run = opening.group()
        closing = re.compile(rf"(?<!`){run}(?!`)").search(text, opening.end())
        if closing is None:  # an unmatched run is literal text
            out.append(html.escape(text[position : opening.end()], quote=False))
            position = opening.end()
            continue
        out.append(html.escape(text[position : opening.start()], quote=False))
        out.append(text[opening.start() : closing.end()])
        position = closing.end()
    out.append(html.escape(text[position:], quote=False))
    return "".join(out)


def _closes(fence: str, found: str, rest: str) -> bool:
    """Whether a line's fence ``found`` (followed by ``rest``) ends a code block opened by ``fence``."""
    return found[0] == fence[0] and len(found) >= len(fence) and not rest.strip()


def escape_reasoning(text: str) -> str:
    """A model's reasoning as Markdown that shows any HTML in it as text (``<b>`` reads as "<b>", never bold,
    and nothing in it can run), while code blocks and code spans, which Markdown escapes itself, stay as they
    are. The page's Markdown sanitizer still applies after this."""
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None  # the fence of the code block being read
    for line in text.splitlines(keepends=True):
        if fence is None:
            found = _FENCE.match(line)
            if found is not None and not (found.group(1)[0] == "`" and "`" in line[found.end() :]):
                out.append(_escape_prose("".join(prose)))
                prose.clear()
                fence = found.group(1)
                out.append(line)
            else:
                prose.append(line)
            continue
        out.append(line)
        closing = _FENCE.match(line)
        if closing is not None and _closes(fence, closing.group(1), line[closing.end() :]):
            fence = None
    out.append(_escape_prose("".join(prose)))
    return "".join(out)


def _chatbot_entries(
    history: Sequence[Message], thinking: bool, show: Callable[[Message], Any] | None = None
) -> Iterator[tuple[int, bool, dict[str, Any]]]:
    """(index among the shown messages, whether it is a reasoning block, the Chatbot entry), in order."""
    shown = [m for m in history if m["role"] in ("user", "assistant")]
    for index, message in enumerate(shown):
        for entry in round_entries(message.get("tool_rounds") or (), _done_reasoning_entry):
            yield index, True, entry  # tool steps are kept as they happened: not edited
        reasoning = message.get("reasoning") or ""
        if message["role"] == "assistant" and reasoning:
            in_flight = thinking and index == len(shown) - 1
            title = THINKING_TITLE if in_flight else thought_title(message.get("reasoning_seconds"))
            metadata = {"title": title, "status": "pending" if in_flight else "done"}
            yield (
                index,
                True,
                {"role": "assistant", "content": escape_reasoning(reasoning), "metadata": metadata},
            )
            if not message["content"]:
                continue  # the model has only thought so far
        if message.get("tool_rounds") and not message["content"]:
            continue  # the tools have run, the answer has not begun
        content = show(message) if show is not None else message["content"]  # with its images and files
        yield index, False, {"role": message["role"], "content": content}
        for source in message.get("sources") or ():  # each cited passage opens below the reply
            yield index, True, source_entry(source)


def source_entry(source: Source) -> dict[str, Any]:
    """A cited source: a closed block titled with its number and place, holding the passage it came from."""
    metadata = {"title": f"📄 [{source.number}] {source.label}", "status": "done"}
    return {"role": "assistant", "content": escape_reasoning(source.text.strip()), "metadata": metadata}


def _done_reasoning_entry(reasoning: str) -> dict[str, Any]:
    """A tool round's reasoning: a closed block."""
    metadata = {"title": thought_title(None), "status": "done"}
    return {"role": "assistant", "content": escape_reasoning(reasoning), "metadata": metadata}


def chatbot_view(
    history: Sequence[Message], *, thinking: bool = False, show: Callable[[Message], Any] | None = None
) -> list[dict[str, Any]]:
    """What the Chatbot shows (a copy, so later edits to the state do not leak into an update in flight).

    A reply with reasoning shows it first, as a collapsible block of its own: open and titled "Thinking…" while
    ``thinking`` (the last reply is being reasoned), else closed and titled with how long the model thought.
    """
    return [entry for _, _, entry in _chatbot_entries(history, thinking, show)]


def chatbot_entry(history: Sequence[Message], index: Any) -> tuple[int, bool]:
    """The Chatbot's entry ``index`` (an int, or a tuple whose first item is it) as (the index of its message
    among the shown messages, whether it is that message's reasoning block); InputError if there is none."""
    if isinstance(index, (list, tuple)):
        index = index[0] if index else None
    entries = [(shown, reasoning) for shown, reasoning, _ in _chatbot_entries(history, False)]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(entries):
        raise InputError("That message is no longer in the conversation.")
    return entries[index]


def drop_trailing_replies(history: Sequence[Message]) -> list[Message]:
    """History without the assistant messages at its end (what Regenerate replies to again)."""
    trimmed = [dict(m) for m in history]
    while trimmed and trimmed[-1]["role"] == "assistant":
        trimmed.pop()
    return trimmed


def remove_last_exchange(history: Sequence[Message]) -> tuple[list[Message], str]:
    """History without its last reply and the user message it answered; returns that user text too."""
    trimmed = drop_trailing_replies(history)
    if trimmed and trimmed[-1]["role"] == "user":
        return trimmed[:-1], trimmed[-1]["content"]
    return trimmed, ""


def open_reply(history: Sequence[Message], start_with: str | None) -> tuple[list[Message], bool]:
    """The history to generate a new reply for, and whether the reply continues a given opening.

    With "Start reply with" text, the reply is an assistant message that already holds that text, continued by
    the model (so the shown reply begins with it); otherwise the history is unchanged.
    """
    opened = [dict(m) for m in history]
    if not (start_with or "").strip():
        return opened, False
    opened.append({"role": "assistant", "content": start_with or ""})
    return opened, True


def visible_positions(history: Sequence[Message]) -> list[int]:
    """The history index of each message the Chatbot shows, in order (see chatbot_view)."""
    return [i for i, m in enumerate(history) if m["role"] in ("user", "assistant")]


def apply_edit(history: Sequence[Message], index: Any, value: Any) -> list[Message]:
    """The history with the ``index``-th shown message's text replaced by ``value`` (a Chatbot edit).

    ``index`` is the Chatbot's message index (an int, or a tuple whose first item is it); InputError if it
    points at no message.
    """
    if isinstance(index, (list, tuple)):
        index = index[0] if index else None
    positions = visible_positions(history)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(positions):
        raise InputError("That message is no longer in the conversation.")
    edited = [dict(m) for m in history]
    edited[positions[index]]["content"] = content_text(value)
    return edited


EXAMPLE_CONVERSATION: tuple[Message, ...] = (
    {"role": "user", "content": "Hello! Who are you?"},
    {"role": "assistant", "content": "I am an assistant. How can I help?"},
    {"role": "user", "content": "What is the capital of France?"},
)


def preview_messages(history: Sequence[Message], system_message: str | None) -> tuple[list[Message], bool]:
    """The messages a template preview renders: the system message and the chat, or an example conversation
    when the chat is empty (returned flag: True when the example is used)."""
    chat = [{"role": m["role"], "content": m["content"]} for m in history]
    example = not chat
    if example:
        chat = [dict(m) for m in EXAMPLE_CONVERSATION]
    system_message = system_message or ""
    head = [{"role": "system", "content": system_message}] if system_message.strip() else []
    return head + chat, example


# -- token counts -----------------------------------------------------------------------------------------------


def context_meter_text(prompt_tokens: int, context: int, reserved: int, dropped: int = 0) -> str:
    """The Chat tab's context meter: prompt tokens used out of the context, and what truncation dropped."""
    share = 100 * prompt_tokens / context if context > 0 else 0.0
    text = (
        f"Context: **{prompt_tokens:,} / {context:,}** tokens ({share:.0f}%), {reserved:,} kept for the reply"
    )
    if dropped:
        text += f"; the {dropped} oldest message{'s' if dropped != 1 else ''} no longer fit and are left out"
    return text + "."


def token_count_text(label: str, tokens: int | None) -> str:
    """``"Prompt: 12 tokens"``, or that no model is loaded to count with (``tokens`` None)."""
    if tokens is None:
        return f"{label}: no model loaded"
    return f"{label}: {tokens:,} token{'s' if tokens != 1 else ''}"


# -- streaming ------------------------------------------------------------------------------------------------


def throttled_parts(
    chunks: Iterable[Chunk],
    interval: float = UPDATE_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[tuple[str, str]]:
    """The cumulative (answer, reasoning) of a stream, at most once per ``interval`` seconds, and always the
    final one."""
    text = reasoning = ""
    last = -math.inf
    pending = False
    for chunk in chunks:
        if not (chunk.text or chunk.reasoning):
            continue
        text += chunk.text
        reasoning += chunk.reasoning
        pending = True
        now = clock()
        if now - last >= interval:
            last = now
            pending = False
            yield text, reasoning
    if pending:
        yield text, reasoning


def throttled_text(
    chunks: Iterable[Chunk],
    interval: float = UPDATE_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[str]:
    """The cumulative text of a stream, at most once per ``interval`` seconds, and always the final text."""
    text = ""
    last = -math.inf
    pending = False
    for chunk in chunks:
        if not chunk.text:
            continue
        text += chunk.text
        pending = True
        now = clock()
        if now - last >= interval:
            last = now
            pending = False
            yield text
    if pending:
        yield text


# -- loader settings ------------------------------------------------------------------------------------------

SettingKind = Literal["int", "float", "bool", "text", "choice"]


def setting_kind(info: FieldInfo) -> tuple[SettingKind, bool, tuple[Any, ...]]:
    """How to draw a loader setting: (kind, optional, choices) from its annotation."""
    annotation = info.annotation
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else str
        origin = typing.get_origin(annotation)
    if origin is Literal:
        return "choice", optional, typing.get_args(annotation)
    if annotation is bool:
        return "bool", optional, ()
    if annotation is int:
        return "int", optional, ()
    if annotation is float:
        return "float", optional, ()
    return "text", optional, ()


def loader_settings_from_values(
    settings_model: type[BaseModel], names: Sequence[str], values: Sequence[Any]
) -> dict[str, Any]:
    """Loader setting widgets -> the mapping passed to load_model (blank optional values are left out)."""
    settings: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        info = settings_model.model_fields[name]
        kind, optional, _ = setting_kind(info)
        if value is None or (kind != "text" and isinstance(value, str) and not value.strip()):
            continue  # a cleared number box: the setting's default applies
        if kind == "text" and optional and value == "":
            continue
        if kind == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        settings[name] = value
    return settings


# -- stored conversations -------------------------------------------------------------------------------------

NO_PERSONALITY = "(none)"  # the personality dropdown's entry for plain instruct chats


def personality_name(value: Any) -> str | None:
    """The personality dropdown's value -> a personality name, or None for "(none)" / nothing chosen."""
    if not isinstance(value, str) or not value.strip() or value == NO_PERSONALITY:
        return None
    return value


def history_from(conversation: Conversation | None) -> list[Message]:
    """The shown version of each stored message, as the per-session history and the Chatbot hold them; a
    reply carries the sources it cites (the numbered passages its question was given)."""
    if conversation is None:
        return []
    history: list[Message] = []
    given: tuple[Source, ...] = ()
    for message in conversation.messages:
        entry = message_entry(message)
        if message.role == "user":
            given = message.grounding.sources if message.grounding is not None else ()
        elif message.role == "assistant" and given:
            cited = cited_sources(message.content, given)
            if cited:
                entry["sources"] = cited
        history.append(entry)
    return history


def message_entry(message: StoredMessage) -> Message:
    """One stored message as the history holds it (its reasoning apart, when it has some)."""
    entry = reply_entry(
        message.content, message.reasoning, message.reasoning_seconds, message.tool_rounds, message.role
    )
    if message.images:
        entry["images"] = message.images
    if message.attachments:
        entry["attachments"] = message.attachments
    if message.grounding is not None and message.grounding.note:
        entry["grounding_note"] = message.grounding.note
    return entry


def reply_entry(
    text: str,
    reasoning: str,
    seconds: float | None,
    tool_rounds: tuple[ToolRoundRecord, ...] = (),
    role: str = "assistant",
) -> Message:
    """A reply being written (or a stored message), as the history holds it: its tool steps and reasoning
    apart from its answer."""
    entry: Message = {"role": role, "content": text}
    if reasoning:
        entry["reasoning"] = reasoning
        entry["reasoning_seconds"] = seconds
    if tool_rounds:
        entry["tool_rounds"] = tool_rounds
    return entry


def message_at(conversation: Conversation, index: Any) -> StoredMessage:
    """The stored message the Chatbot shows at ``index`` (an int, or a tuple whose first item is it)."""
    if isinstance(index, (list, tuple)):
        index = index[0] if index else None
    positions = visible_positions(history_from(conversation))
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(positions):
        raise InputError("That message is no longer in the conversation.")
    return conversation.messages[positions[index]]


def last_exchange(conversation: Conversation) -> tuple[int | None, str]:
    """Remove last: the position to cut the conversation from (None: nothing to remove) and the user text
    that goes back into the message box (the last replies and the user message they answered)."""
    messages = conversation.messages
    start = len(messages)
    while start > 0 and messages[start - 1].role == "assistant":
        start -= 1
    text = ""
    if start > 0 and messages[start - 1].role == "user":
        start -= 1
        text = messages[start].content
    if start == len(messages):
        return None, ""
    return messages[start].position, text


def last_reply(conversation: Conversation | None) -> StoredMessage | None:
    """The conversation's last message when it is a reply (the one ◀ / ▶ switch the versions of)."""
    if conversation is None or not conversation.messages or conversation.messages[-1].role != "assistant":
        return None
    return conversation.messages[-1]


def alternative_label(conversation: Conversation | None) -> str | None:
    """ "2/3" when the last reply has several versions (the shown one first), else None."""
    reply = last_reply(conversation)
    if reply is None or len(reply.alternatives) < 2:
        return None
    return f"{reply.active + 1}/{len(reply.alternatives)}"


def conversation_label(
    summary: ConversationSummary, now: float | None = None, *, show_character: bool = False
) -> str:
    """A conversation list entry: its title and when it last changed (the time today, else the date)."""
    changed = time.localtime(summary.updated_at)
    today = time.localtime(time.time() if now is None else now)
    same_day = changed[:3] == today[:3]
    when = time.strftime("%H:%M" if same_day else "%Y-%m-%d", changed)
    who = f" ({summary.character})" if show_character and summary.character else ""
    return f"{summary.title}{who} · {when}"


def export_file_name(title: str) -> str:
    """A safe file name for a conversation's JSON export."""
    stem = "".join(c if c.isalnum() or c in " -_" else "_" for c in title).strip(" _") or "chat"
    return f"{stem[:60]}.json"
