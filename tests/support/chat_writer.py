"""A separate process writing to a ChatStore, for the crash-safety and multi-process tests in test_chats.py.

It prints one line per committed write, flushed, only after the store call has returned (so a printed line is a
promise that the write is in the database):

    python tests/chat_writer.py DB append TAG          create a conversation ("conv ID"), then append messages
                                                        forever ("msg MESSAGE_ID I" for content_for(TAG, I))
    python tests/chat_writer.py DB stream TAG          create a conversation, append 3 messages ("msg ..."), then
                                                        an empty assistant reply ("stream MESSAGE_ID") saved over
                                                        and over as it grows ("saved K" for stream_text(K))
    python tests/chat_writer.py DB count TAG N IDS     print "ready", wait for a line on stdin, then append N
                                                        messages round-robin over the comma-separated
                                                        conversation IDS and print "done"
"""

from __future__ import annotations

import sys
from pathlib import Path

from webui.core.chats.store import ChatStore

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "and",
    "keeps",
    "every",
    "word",
    "it",
    "ever",
    "wrote",
]


def content_for(tag: str, i: int) -> str:
    """The text of message ``i`` written by writer ``tag``: recognisable, and of varying length."""
    body = " ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(i % 97 + 1))
    return f"[{tag}:{i}] {body} [end {tag}:{i}]"


def stream_text(k: int) -> str:
    """A streamed reply after ``k`` saves: each save adds a few words."""
    return "".join(f"token{j} is here. " for j in range(k))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    db, mode, tag = Path(argv[0]), argv[1], argv[2]
    store = ChatStore(db)
    if mode == "append":
        conversation = store.create(title=f"writer {tag}")
        say(f"conv {conversation.id}")
        i = 0
        while True:
            role = "user" if i % 2 == 0 else "assistant"
            message = store.append(
                conversation.id, role, content_for(tag, i), model=None if i % 2 == 0 else tag
            )
            say(f"msg {message.id} {i}")
            i += 1
    elif mode == "stream":
        conversation = store.create(title=f"stream {tag}")
        say(f"conv {conversation.id}")
        for i in range(3):
            message = store.append(conversation.id, ("user", "assistant")[i % 2], content_for(tag, i))
            say(f"msg {message.id} {i}")
        reply = store.append(conversation.id, "assistant", "", model="streamer")
        say(f"stream {reply.id}")
        k = 0
        while True:
            k += 1
            store.set_content(reply.id, stream_text(k))
            say(f"saved {k}")
    elif mode == "count":
        count = int(argv[3])
        conversation_ids = [int(x) for x in argv[4].split(",")]
        say("ready")
        sys.stdin.readline()
        for i in range(count):
            store.append(conversation_ids[i % len(conversation_ids)], "user", content_for(tag, i))
        say("done")
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
