"""Tiny real checkpoints for the Transformers, GPTQ and AWQ loader tests, built on CPU inside the test session.

A byte-level BPE tokenizer (ChatML special tokens and chat template) is trained on a small embedded corpus, a
two-layer llama-architecture model is trained on it for a few hundred steps (so greedy output is text, not one
repeated token), then gptqmodel quantizes it to GPTQ and to AWQ. The build runs in a subprocess (gptqmodel patches
transformers on import and needs GPTQMODEL_CPU_WORKERS) and is cached under ~/.cache/palabre-tests/<hash>/, keyed
by this file's source and the library versions, so only the first run pays (~1 minute on 2 cores).

Run directly to build: ``python -m tests.support.tiny_models [CACHE_ROOT]``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.cached_build import build_once, default_cache_root, source_key

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS, EOS = "<|endoftext|>", "<|im_end|>"
LIBRARIES = ("torch", "transformers", "tokenizers", "gptqmodel", "safetensors", "optimum")
GROUP_SIZE = 32  # divides every quantized layer's input width (128 and 384)

_FACTS = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What colour is the sky?", "The sky is blue on a clear day."),
    ("What do cats like?", "Cats like to sleep in the sun and chase small things."),
    ("Who are you?", "I am a tiny test model. I know a few facts and I like to help."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is two plus two?", "Two plus two is four."),
    ("Say hello.", "Hello! It is nice to meet you."),
)
_PROSE = (
    "Once upon a time there was a small robot who lived in a quiet village by the sea. "
    "Every morning the robot walked to the harbour to count the boats, and every evening it told the "
    "children a story about the stars. The children loved the robot because it never forgot a name. "
    "One day a storm came over the hills and the boats could not find the harbour. The robot climbed the "
    "old tower and turned on its light, and one by one the boats came home. "
    "Palabre is a local web interface for language models. It loads a model, renders the prompt with a "
    "template, and streams the reply token by token. The numbers go one, two, three, four, five, six, "
    "seven, eight, nine, ten. The days of the week are Monday, Tuesday, Wednesday, Thursday, Friday, "
    "Saturday and Sunday. "
)


def corpus() -> str:
    """The training text: prose plus ChatML conversations, so chat prompts get a sensible greedy reply."""
    chats = []
    for question, answer in _FACTS:
        chats.append(
            f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n{answer}<|im_end|>\n"
        )
        chats.append(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n")
    return (_PROSE * 3) + "".join(chats) * 2


@dataclass(frozen=True)
class TinyModels:
    """The three built folders."""

    llama: Path
    gptq: Path
    awq: Path


def cache_key() -> str:
    """Changes whenever this builder or one of the libraries it relies on changes."""
    return source_key(__file__, LIBRARIES)


def _folders(root: Path) -> TinyModels:
    return TinyModels(llama=root / "tiny-llama", gptq=root / "tiny-llama-gptq", awq=root / "tiny-llama-awq")


def ensure_tiny_models(cache_root: Path | None = None) -> TinyModels:
    """The cached tiny checkpoints, building them (in a subprocess) on first use."""
    root = (cache_root or default_cache_root()) / cache_key()
    # gptqmodel patches transformers on import and needs its CPU worker count set before it is imported.
    build_once(root, "tests.support.tiny_models", "the tiny test models", {"GPTQMODEL_CPU_WORKERS": "2"})
    return _folders(root)


def reference_greedy(folder: Path, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """transformers' own greedy continuation of ``prompt`` (text without special tokens, new token count),
    loaded straight from ``folder`` with no Palabre code involved: the loaders must match it exactly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    new = output[0][inputs["input_ids"].shape[1] :].tolist()
    eos = model.generation_config.eos_token_id
    ends = {eos} if isinstance(eos, int) else set(eos or [])
    counted = [t for t in new if t not in ends]
    return tokenizer.decode(new, skip_special_tokens=True), len(counted)


# -- the build (runs in the subprocess) ---------------------------------------------------------------------


def _build_tokenizer(folder: Path) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=640,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = corpus()
    tokenizer.train_from_iterator(text.split("\n"), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    # Like Llama's tokenizers: BOS is added when special tokens are requested (add_bos_token honours it).
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=BOS, model_max_length=512
    )
    wrapped.chat_template = CHATML_TEMPLATE
    wrapped.save_pretrained(folder)
    return wrapped


def _build_llama(folder: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    # One thread: on a 2-core machine with other work running, two threads measured ~10x slower per step.
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    tokenizer = _build_tokenizer(folder)
    ids = tokenizer(corpus(), add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    data = torch.tensor(ids, dtype=torch.long)
    bos_id, eos_id = tokenizer.convert_tokens_to_ids([BOS, EOS])  # type: ignore[attr-defined]
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=bos_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    window, batch = 64, 16
    model.train()
    for _step in range(200):
        starts = torch.randint(0, len(data) - window - 1, (batch,))
        inputs = torch.stack([data[s : s + window] for s in starts])
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"final training loss {loss.item():.3f}")
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=[eos_id, bos_id], pad_token_id=bos_id
    )
    model.save_pretrained(folder)


def _calibration() -> list[str]:
    text = corpus()
    pieces = [text[i : i + 400] for i in range(0, len(text) - 400, 200)]
    return pieces[:48]


def _quantize(source: Path, target: Path, method: str) -> None:
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig

    if method == "awq":
        config = QuantizeConfig(bits=4, group_size=GROUP_SIZE, quant_method="awq", format="gemm")
        backend = BACKEND.AWQ_TORCH  # the only AWQ kernel that quantizes on CPU
    else:
        config = QuantizeConfig(bits=4, group_size=GROUP_SIZE)
        backend = BACKEND.AUTO
    model = GPTQModel.load(str(source), config, device="cpu")
    model.quantize(_calibration(), batch_size=1, backend=backend)
    model.save(str(target))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (source / name).is_file() and not (target / name).is_file():
            shutil.copy2(source / name, target / name)


def build(root: Path) -> TinyModels:
    """Build all three folders under ``root`` (which must exist)."""
    folders = _folders(root)
    folders.llama.mkdir()
    _build_llama(folders.llama)
    _quantize(folders.llama, folders.gptq, "gptq")
    _quantize(folders.llama, folders.awq, "awq")
    return folders


if __name__ == "__main__":
    if len(sys.argv) > 1:
        built = build(Path(sys.argv[1]))
        print(built)
    else:
        print(ensure_tiny_models())
