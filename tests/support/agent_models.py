"""A tiny "agent" model that thinks and calls tools, built on CPU inside the test session: real parts for the
reasoning and tool-call tests (the loaders, the template, the reply reader, the grammar) without a download.

Like tests/support/tiny_models.py: a byte-level BPE tokenizer and a small llama-architecture model are trained
on an embedded corpus, in a subprocess, and cached under ~/.cache/palabre-tests/<hash>/ (keyed by this file,
the chat template it uses and the library versions). Here the tokenizer has Qwen3's markers (``<|im_start|>``,
``<|im_end|>``, ``<|endoftext|>`` special; ``<think>``, ``</think>``, ``<tool_call>``, ``</tool_call>``,
``<tool_response>``, ``</tool_response>`` added as text) and the chat template is Qwen3's real one
(tests/data/templates/qwen3.jinja). Every training conversation is rendered through that template, as Palabre
renders it, so greedy decoding of a prompt in the same form reproduces:

- a thinking reply, ``<think>\\n<reasoning>\\n</think>\\n\\n<answer>``, for each of :data:`QUESTIONS`;
- with ``enable_thinking=False`` (the template prefills an empty think block) the answer alone;
- with :data:`WEATHER_TOOL` offered, for "What is the weather in <city>?" (:data:`CITIES`): reasoning, then
  ``<tool_call>\\n{"name": "get_weather", "arguments": {"city": "<city>"}}\\n</tool_call>``;
- after the tool's result (:func:`weather_result`): the answer :func:`weather_answer`.

Both an HF folder (Transformers loader) and a GGUF file (llama.cpp loader, written with the ``gguf`` package
the way llama.cpp's converter does: q/k rows permuted, gpt2 tokenizer, the template in the metadata) are saved;
the build checks that transformers reproduces every behaviour above and that llama.cpp's greedy output equals
transformers' for each of them, so a cached model is known to work.

Run directly to build: ``python -m tests.support.agent_models [CACHE_ROOT]``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cached_build import build_once, default_cache_root, source_key

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "data" / "templates"
QWEN3_TEMPLATE_FILE = TEMPLATES_DIR / "qwen3.jinja"
LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "gguf",
    "llama_cpp_python",
    "jinja2",
    "numpy",
)

BOS, EOS = "<|endoftext|>", "<|im_end|>"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Added as text (not special): they must come back in decoded output, as Qwen3's do.
MARKER_TOKENS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
GGUF_NAME = "tiny-agent.gguf"
HF_NAME = "tiny-agent"

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The name of the city."}},
            "required": ["city"],
        },
    },
}
# The trained cities and what the tool "returns" for each (the model learned these results and answers).
WEATHER: dict[str, dict[str, Any]] = {
    "Paris": {"temperature": 22, "condition": "sunny"},
    "London": {"temperature": 14, "condition": "rainy"},
    "Tokyo": {"temperature": 26, "condition": "cloudy"},
    "Berlin": {"temperature": 18, "condition": "windy"},
    "Madrid": {"temperature": 31, "condition": "sunny"},
    "Rome": {"temperature": 25, "condition": "cloudy"},
}
CITIES: tuple[str, ...] = tuple(WEATHER)

# (question, reasoning, answer): the model thinks the reasoning, then answers.
QUESTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "What is the capital of France?",
        "The user asks about France. Its capital is Paris.",
        "The capital of France is Paris.",
    ),
    (
        "What is the capital of Italy?",
        "The user asks about Italy. Its capital is Rome.",
        "The capital of Italy is Rome.",
    ),
    (
        "What is two plus two?",
        "Two plus two makes four.",
        "Two plus two is four.",
    ),
    (
        "How many legs does a spider have?",
        "A spider is not an insect. It has eight legs.",
        "A spider has eight legs.",
    ),
    (
        "What colour is the sky?",
        "On a clear day the sky looks blue.",
        "The sky is blue on a clear day.",
    ),
    (
        "Say hello.",
        "The user wants a greeting.",
        "Hello! It is nice to meet you.",
    ),
)
SYSTEM_PROMPT = "You are a helpful assistant."


def weather_question(city: str) -> str:
    return f"What is the weather in {city}?"


def weather_call_arguments(city: str) -> str:
    """The call's arguments as the model writes them (and as OpenAI's API carries them: a JSON text)."""
    return json.dumps({"city": city})


def weather_call_reasoning(city: str) -> str:
    return f"The user wants the weather in {city}. I will call get_weather."


def weather_result(city: str) -> str:
    """The tool message's content for ``city`` (what the model was trained to read)."""
    return json.dumps(WEATHER[city])


def weather_answer_reasoning(city: str) -> str:
    facts = WEATHER[city]
    return f"The tool says it is {facts['condition']} and {facts['temperature']} degrees in {city}."


def weather_answer(city: str) -> str:
    facts = WEATHER[city]
    return f"It is {facts['condition']} and {facts['temperature']} degrees in {city}."


def qwen3_template() -> str:
    """Qwen3's real chat template (llama.cpp's models/templates/Qwen-Qwen3-0.6B.jinja)."""
    return QWEN3_TEMPLATE_FILE.read_text(encoding="utf-8")


@dataclass(frozen=True)
class AgentModels:
    """The built model, as a GGUF file and as a Transformers folder (same weights, same template)."""

    gguf: Path
    hf: Path


# -- cache ----------------------------------------------------------------------------------------------------


def cache_key() -> str:
    """Changes whenever this builder, its template or one of the libraries it relies on changes."""
    return source_key(__file__, LIBRARIES, prefix="agent-", extra=[QWEN3_TEMPLATE_FILE])


def _built(root: Path) -> AgentModels:
    return AgentModels(gguf=root / GGUF_NAME, hf=root / HF_NAME)


def ensure_agent_models(cache_root: Path | None = None) -> AgentModels:
    """The cached agent model, building it (in a subprocess, about a minute on 2 cores) on first use."""
    root = (cache_root or default_cache_root()) / cache_key()
    build_once(root, "tests.support.agent_models", "the tiny agent model")
    return _built(root)


# -- rendering (independent of Palabre: jinja2's sandbox with the globals HF's apply_chat_template gives) ----


def render(
    messages: Sequence[Mapping[str, Any]],
    *,
    template: str | None = None,
    add_generation_prompt: bool = False,
    **variables: Any,
) -> str:
    """Render ``messages`` (HF's dict shape) through ``template`` (default Qwen3's) as HF's
    ``apply_chat_template`` does: a sandboxed environment with trim/lstrip blocks and a non-escaping tojson."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def tojson(value: Any, indent: int | None = None, **options: Any) -> str:
        return json.dumps(value, indent=indent, **{"ensure_ascii": False, **options})

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    compiled = env.from_string(template if template is not None else qwen3_template())
    return compiled.render(
        messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **variables
    )


def tool_call_message(city: str, reasoning: str = "", call_id: str = "call_0") -> dict[str, Any]:
    """The assistant message that calls get_weather for ``city`` (HF shape, arguments as an object)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": city}},
            }
        ],
    }
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


@dataclass(frozen=True)
class Example:
    """One training (and checking) case: the prompt as rendered for generation, and the reply it must get."""

    name: str
    prompt: str
    reply: str  # up to and including <|im_end|>


def _example(name: str, history: list[dict[str, Any]], reply: dict[str, Any], **variables: Any) -> Example:
    """Render ``history`` with the generation prompt, and ``history + [reply]`` whole: the difference is the
    reply the model must write (Qwen3's template shows the last assistant turn with its think block)."""
    prompt = render(history, add_generation_prompt=True, **variables)
    full = render([*history, reply], **variables)
    assert full.startswith(prompt), (name, prompt, full)
    target = full[len(prompt) :]
    end = target.index(EOS) + len(EOS)
    return Example(name, prompt, target[:end])


def examples() -> list[Example]:
    """Every case the model is trained on (each also checked after the build)."""
    out: list[Example] = []
    systems: tuple[list[dict[str, Any]], ...] = ([], [{"role": "system", "content": SYSTEM_PROMPT}])
    tools = [WEATHER_TOOL]
    for s, head in enumerate(systems):
        for q, (question, reasoning, answer) in enumerate(QUESTIONS):
            user = [*head, {"role": "user", "content": question}]
            think = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
            plain = {"role": "assistant", "content": answer}
            out.append(_example(f"think-{s}-{q}", user, think))
            out.append(_example(f"nothink-{s}-{q}", user, plain, enable_thinking=False))
            # Tools offered, but the question needs none: the model answers.
            out.append(_example(f"tools-think-{s}-{q}", user, think, tools=tools))
            # A second question after a first exchange (earlier turns' reasoning is not shown again).
            first, _, first_answer = QUESTIONS[(q + 1) % len(QUESTIONS)]
            two = [
                *head,
                {"role": "user", "content": first},
                {"role": "assistant", "content": first_answer},
                {"role": "user", "content": question},
            ]
            out.append(_example(f"second-{s}-{q}", two, think))
        for city in CITIES:
            user = [*head, {"role": "user", "content": weather_question(city)}]
            call_reasoning = weather_call_reasoning(city)
            out.append(
                _example(f"call-{s}-{city}", user, tool_call_message(city, call_reasoning), tools=tools)
            )
            out.append(
                _example(
                    f"call-nothink-{s}-{city}",
                    user,
                    tool_call_message(city),
                    tools=tools,
                    enable_thinking=False,
                )
            )
            result = {
                "role": "tool",
                "content": weather_result(city),
                "tool_call_id": "call_0",
                "name": "get_weather",
            }
            final = {
                "role": "assistant",
                "content": weather_answer(city),
                "reasoning_content": weather_answer_reasoning(city),
            }
            final_plain = {"role": "assistant", "content": weather_answer(city)}
            # The call comes back with its reasoning (Palabre re-sends it inside the tool loop) or without.
            for r, call in enumerate((tool_call_message(city, call_reasoning), tool_call_message(city))):
                loop = [*user, call, result]
                out.append(_example(f"answer-{s}-{r}-{city}", loop, final, tools=tools))
                out.append(
                    _example(
                        f"answer-nothink-{s}-{r}-{city}",
                        loop,
                        final_plain,
                        tools=tools,
                        enable_thinking=False,
                    )
                )
    return out


# -- the build (runs in the subprocess) -----------------------------------------------------------------------


def _corpus_pieces(cases: Sequence[Example]) -> list[str]:
    """Texts to learn the BPE merges from: every prompt and reply, cut at the marker tokens."""
    import re

    markers = "|".join(re.escape(t) for t in (*SPECIAL_TOKENS, *MARKER_TOKENS))
    pieces: list[str] = []
    for case in cases:
        for text in (case.prompt, case.reply):
            pieces.extend(p for p in re.split(markers, text) if p)
    return pieces


def _build_tokenizer(folder: Path, cases: Sequence[Example]) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus_pieces(cases), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKER_TOKENS])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=BOS, model_max_length=1024
    )
    wrapped.chat_template = qwen3_template()
    wrapped.save_pretrained(folder)
    return wrapped


def _encode(tokenizer: Any, case: Example) -> tuple[list[int], list[int]]:
    """Prompt ids and reply ids, each encoded on its own: the loaders encode the prompt alone, so the model must
    learn to continue exactly those tokens (encoding both together could merge across the boundary)."""
    prompt = tokenizer.encode(case.prompt, add_special_tokens=False)
    reply = tokenizer.encode(case.reply, add_special_tokens=False)
    return prompt, reply


def _config(tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    bos_id, eos_id = tokenizer.convert_tokens_to_ids([BOS, EOS])
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: the GGUF permutation must use the kv head count
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=bos_id,
        tie_word_embeddings=False,
    )


def _train(folder: Path, cases: Sequence[Example], steps: int) -> tuple[Any, Any]:
    import random

    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    # One thread: on a 2-core machine with other work running, two threads measured ~10x slower per step.
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    rng = random.Random(1234)
    tokenizer = _build_tokenizer(folder, cases)
    config = _config(tokenizer)
    model = LlamaForCausalLM(config)
    pad = config.pad_token_id
    encoded = []
    for case in cases:
        prompt, reply = _encode(tokenizer, case)
        # The calls carry the one hard part (the city written as a JSON string): seen twice as often.
        for _ in range(2 if case.name.startswith("call") else 1):
            encoded.append((prompt + reply, [-100] * len(prompt) + reply))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 30) * max(0.05, 1 - step / steps)
    )
    batch = 8
    model.train()
    batches: list[list[int]] = []
    loss = None
    for step in range(steps):
        if not batches:
            batches = _length_batches(encoded, batch, rng)
        chosen = [encoded[i] for i in batches.pop()]
        width = max(len(ids) for ids, _ in chosen)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in chosen])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chosen])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chosen])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    print(f"final training loss {loss.item() if loss is not None else float('nan'):.4f}", flush=True)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[config.eos_token_id, config.bos_token_id],
        pad_token_id=pad,
    )
    model.save_pretrained(folder)
    return tokenizer, model


def _length_batches(encoded: Sequence[tuple[list[int], list[int]]], size: int, rng: Any) -> list[list[int]]:
    """One epoch of batches, each of examples of similar length (little padding), in random order."""
    order = rng.sample(range(len(encoded)), len(encoded))
    order.sort(key=lambda i: len(encoded[i][0]))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def _greedy_hf(tokenizer: Any, model: Any, prompt: str, max_new_tokens: int = 96) -> list[int]:
    import torch

    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens
        )
    return out[0][ids.shape[1] :].tolist()


# -- GGUF ------------------------------------------------------------------------------------------------------


def _permute(weights: Any, n_head: int, n_head_kv: int | None) -> Any:
    """llama.cpp's converter (convert_hf_to_gguf.py LlamaModel.permute): HF's rotary layout to GGML's."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_gguf(
    hf_folder: Path, target: Path, template: str | None = None, tool_template: str | None = None
) -> Path:
    """Write the model in ``hf_folder`` as a GGUF file (f32 tensors, llama architecture, gpt2 tokenizer) with
    ``template`` (default: the folder's own) as ``tokenizer.chat_template``, and ``tool_template`` as
    ``tokenizer.chat_template.tool_use`` when given."""
    import numpy as np
    from gguf import GGUFWriter, LlamaFileType, TokenType
    from safetensors.numpy import load_file

    config = json.loads((hf_folder / "config.json").read_text())
    tokenizer_json = json.loads((hf_folder / "tokenizer.json").read_text())
    tokenizer_config = json.loads((hf_folder / "tokenizer_config.json").read_text())
    if template is None:
        chat_file = hf_folder / "chat_template.jinja"
        template = (
            chat_file.read_text() if chat_file.is_file() else str(tokenizer_config.get("chat_template") or "")
        )
    vocab: dict[str, int] = dict(tokenizer_json["model"]["vocab"])
    added = {item["content"]: item for item in tokenizer_json.get("added_tokens", [])}
    for content, item in added.items():
        vocab[content] = item["id"]
    size = int(config["vocab_size"])
    tokens = [""] * size
    for text, index in vocab.items():
        tokens[index] = text
    types = []
    for text in tokens:
        item = added.get(text)
        if item is None:
            types.append(TokenType.NORMAL)
        else:
            types.append(TokenType.CONTROL if item.get("special") else TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]

    n_head, n_kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    hidden = int(config["hidden_size"])
    writer = GGUFWriter(target, "llama")
    writer.add_name("tiny-agent")
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(hidden // n_head)
    rope = config.get("rope_parameters") or {}  # transformers 5 nests rope_theta there
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(size)
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab[BOS])
    writer.add_eos_token_id(vocab[EOS])
    writer.add_pad_token_id(vocab[BOS])
    writer.add_add_bos_token(False)  # like Qwen: the prompt is used as it is
    writer.add_chat_template(template)
    if tool_template:
        writer.add_string("tokenizer.chat_template.tool_use", tool_template)

    weights = load_file(str(hf_folder / "model.safetensors"))

    def tensor(name: str) -> Any:
        return np.ascontiguousarray(weights[name].astype(np.float32))

    writer.add_tensor("token_embd.weight", tensor("model.embed_tokens.weight"))
    writer.add_tensor("output_norm.weight", tensor("model.norm.weight"))
    writer.add_tensor("output.weight", tensor("lm_head.weight"))
    for layer in range(int(config["num_hidden_layers"])):
        hf, gg = f"model.layers.{layer}.", f"blk.{layer}."
        writer.add_tensor(gg + "attn_norm.weight", tensor(hf + "input_layernorm.weight"))
        q = _permute(tensor(hf + "self_attn.q_proj.weight"), n_head, n_head)
        k = _permute(tensor(hf + "self_attn.k_proj.weight"), n_head, n_kv)
        writer.add_tensor(gg + "attn_q.weight", np.ascontiguousarray(q))
        writer.add_tensor(gg + "attn_k.weight", np.ascontiguousarray(k))
        writer.add_tensor(gg + "attn_v.weight", tensor(hf + "self_attn.v_proj.weight"))
        writer.add_tensor(gg + "attn_output.weight", tensor(hf + "self_attn.o_proj.weight"))
        writer.add_tensor(gg + "ffn_norm.weight", tensor(hf + "post_attention_layernorm.weight"))
        writer.add_tensor(gg + "ffn_gate.weight", tensor(hf + "mlp.gate_proj.weight"))
        writer.add_tensor(gg + "ffn_up.weight", tensor(hf + "mlp.up_proj.weight"))
        writer.add_tensor(gg + "ffn_down.weight", tensor(hf + "mlp.down_proj.weight"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def write_template_gguf(
    target: Path, template: str, models: AgentModels | None = None, tool_template: str | None = None
) -> Path:
    """A GGUF with the agent model's weights and tokenizer but ``template`` as its chat template (for tests of
    other families' templates through the real loader). Writes ``target`` and returns it."""
    built = models or ensure_agent_models()
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_gguf(built.hf, target, template, tool_template)


def _greedy_llama_cpp(llm: Any, prompt: str, ends: set[int], max_new_tokens: int = 96) -> list[int]:
    """llama-cpp-python's own greedy continuation (token ids, the end token left out)."""
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    out: list[int] = []
    for token in llm.generate(
        tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True
    ):
        if token in ends or len(out) >= max_new_tokens:
            break
        out.append(int(token))
    return out


def _check(gguf_path: Path, tokenizer: Any, model: Any, cases: Sequence[Example]) -> None:
    """Fail the build unless transformers reproduces every case and llama.cpp's greedy tokens equal HF's."""
    import llama_cpp

    ends = {tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(BOS)}
    failures = []
    hf_outputs = {}
    for case in cases:
        new = _greedy_hf(tokenizer, model, case.prompt)
        hf_outputs[case.name] = [t for t in new if t not in ends]
        text = tokenizer.decode(new, skip_special_tokens=False)
        want = case.reply
        if not (text.startswith(want) or text == want):
            failures.append(f"{case.name}: got {text!r}, want {want!r}")
    if failures:
        raise SystemExit(f"{len(failures)}/{len(cases)} cases not reproduced:\n" + "\n".join(failures))
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=1024, verbose=False, seed=0)
    for case in cases:
        ids = tokenizer.encode(case.prompt, add_special_tokens=False)
        cpp_ids = llm.tokenize(case.prompt.encode("utf-8"), add_bos=False, special=True)
        if list(cpp_ids) != ids:
            failures.append(f"{case.name}: llama.cpp tokenizes the prompt differently")
            continue
        got = _greedy_llama_cpp(llm, case.prompt, ends)
        if got != hf_outputs[case.name]:
            failures.append(
                f"{case.name}: llama.cpp {llm.detokenize(got).decode(errors='replace')!r} != "
                f"transformers {tokenizer.decode(hf_outputs[case.name])!r}"
            )
    llm.close()
    if failures:
        raise SystemExit("llama.cpp disagrees with transformers:\n" + "\n".join(failures))


def build(root: Path, steps: int = 400) -> AgentModels:
    """Build the HF folder and the GGUF under ``root`` (which must exist), and check them."""
    import time

    built = _built(root)
    built.hf.mkdir()
    cases = examples()
    started = time.monotonic()
    tokenizer, model = _train(built.hf, cases, steps)
    print(f"trained {len(cases)} cases in {time.monotonic() - started:.0f}s", flush=True)
    write_gguf(built.hf, built.gguf)
    _check(built.gguf, tokenizer, model, cases)
    print(f"built and checked in {time.monotonic() - started:.0f}s", flush=True)
    return built


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(build(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:3])))
    else:
        print(ensure_agent_models())
