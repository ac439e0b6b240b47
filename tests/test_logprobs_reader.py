"""The reply reader hands each token's logprob on with the text it belongs to: held back with the text a stop
string might still claim, dropped with the text a stop string cut off, all released at the end; the prompt's
logprobs pass through on the first chunk. Unit tests at the reader (the loaders' logprobs are tested against
the models' own logits in test_logprobs_transformers and test_logprobs_llama)."""

from __future__ import annotations

from webui.core.loader import Chunk, TokenLogprob
from webui.core.reasoning import FORMATS as THINKING
from webui.core.reply_reader import ReplyFormat, ReplyReader


def token(text: str, logprob: float = -1.0) -> TokenLogprob:
    return TokenLogprob(len(text), text, text.encode(), logprob)


def feed(reader: ReplyReader, pieces: list[str]) -> list[tuple[str, list[str]]]:
    """(shown text, tokens released) of each piece fed as one one-token chunk, then of the end."""
    out = []
    for piece in pieces:
        chunk = reader.feed(Chunk(piece, tokens=1, logprobs=(token(piece),)))
        out.append((chunk.text, [entry.token for entry in chunk.logprobs]))
        if reader.stopped:
            break
    end = reader.finish()
    out.append((end.text, [entry.token for entry in end.logprobs]))
    return out


def test_tokens_go_out_with_their_text() -> None:
    out = feed(ReplyReader(None, "", []), ["Hello", " world", "."])
    assert out == [("Hello", ["Hello"]), (" world", [" world"]), (".", ["."]), ("", [])]


def test_a_token_held_back_by_a_stop_string_waits_with_its_text() -> None:
    out = feed(ReplyReader(None, "", ["\nUser:"]), ["Hi", "\n", "there", "\n", "User", ":", " more"])
    assert out == [
        ("Hi", ["Hi"]),
        ("", []),  # "\n" may begin the stop string
        ("\nthere", ["\n", "there"]),
        ("", []),
        ("", []),
        ("", []),  # the stop string matched: "\n", "User" and ":" are cut with their text
        ("", []),
    ]


def test_a_token_that_begins_before_the_stop_string_is_kept() -> None:
    out = feed(ReplyReader(None, "", ["END"]), ["one", " twoEN", "D three"])
    shown = "".join(text for text, _ in out)
    tokens = [name for _, names in out for name in names]
    assert shown == "one two"
    assert tokens == ["one", " twoEN"]  # " twoEN" shows " two"; "D three" begins inside the stop string


def test_several_tokens_in_one_chunk_and_a_textless_one() -> None:
    reader = ReplyReader(None, "", ["!!"])
    first = reader.feed(Chunk("ab", tokens=2, logprobs=(token("a"), token("b"))))
    special = reader.feed(Chunk("", tokens=1, logprobs=(TokenLogprob(7, "<x>", b"<x>", -2.0),)))
    bang = reader.feed(Chunk("c!", tokens=1, logprobs=(token("c!"),)))
    end = reader.finish()
    assert [e.token for e in first.logprobs] == ["a", "b"]
    assert special.logprobs == ()  # no text yet where it stands: it goes with the next shown text
    assert [e.token for e in bang.logprobs] == ["<x>", "c!"] and bang.text == "c"
    assert end.text == "!" and end.logprobs == ()


def test_the_prompts_logprobs_pass_through_on_the_first_chunk() -> None:
    reader = ReplyReader(None, "", [])
    prompt = (None, token("Hello"), token(" there"))
    first = reader.feed(Chunk("Hi", tokens=1, prompt_logprobs=prompt, logprobs=(token("Hi"),)))
    assert first.prompt_logprobs == prompt and [e.token for e in first.logprobs] == ["Hi"]


def test_reasoning_tokens_keep_their_logprobs() -> None:
    reader = ReplyReader(ReplyFormat(reasoning=THINKING["think"]), "", [])
    out = feed(reader, ["<think>", "Hmm", "</think>", "Yes"])
    tokens = [name for _, names in out for name in names]
    assert tokens == ["<think>", "Hmm", "</think>", "Yes"]
