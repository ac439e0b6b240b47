"""A tiny random-weight vision model (Idefics3: a SigLIP-style vision tower, a pixel-shuffle connector and a
llama text model), built on CPU inside the test session: real parts for the vision tests without a download.

Three things are saved under ~/.cache/palabre-tests/<hash>/ (keyed by this file and the library versions):

- ``tiny-vlm/``: the Transformers folder (``Idefics3ForConditionalGeneration``, its processor, a SentencePiece
  ``tokenizer.model``; ``text_config.architectures`` is ``LlamaForCausalLM`` so llama.cpp's converter takes it);
- ``tiny-vlm.gguf`` and ``mmproj-tiny-vlm.gguf``: the same model converted by llama.cpp's own
  ``convert_hf_to_gguf.py`` (once for the text model, once with ``--mmproj``), taken from llama-cpp-python's
  source distribution (``./start.sh test`` fetches it into .venv; see :func:`ensure_converter`);
- ``tiny-qwen2vl.gguf`` and its projector: a tiny Qwen2-VL converted the same way, whose images take fewer
  positions than tokens (M-RoPE), as Qwen-VL models' do.

The weights are random, so the replies mean nothing; what the tests check is that images reach the model as
image tokens (:data:`IMAGE_TOKENS` per image), that greedy replies are deterministic and that the evaluated
prefix, images included, is reused.

Run directly to build: ``python -m tests.support.vision_models [CACHE_ROOT]``;
``python -m tests.support.vision_models --converter`` only fetches the converter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.cached_build import build_once, default_cache_root, source_key

if TYPE_CHECKING:
    from webui.core.media import Image

LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "sentencepiece",
    "safetensors",
    "gguf",
    "llama_cpp_python",
)
LLAMA_CPP_VERSION = "0.3.36"  # the converter must match the llama.cpp that loads its output
HF_NAME = "tiny-vlm"
GGUF_NAME = "tiny-vlm.gguf"
MMPROJ_NAME = "mmproj-tiny-vlm.gguf"
MROPE_GGUF_NAME = "tiny-qwen2vl.gguf"

IMAGE_SIZE = 64  # pixels per side the vision tower sees
PATCH_SIZE = 8
SCALE_FACTOR = 2  # the connector's pixel shuffle
# (64 / 8) ** 2 = 64 patches, shuffled 2x2 into 16 image embeddings: the tokens one image takes.
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2

BOS, EOS, UNK = "<s>", "<end_of_utterance>", "<unk>"
IMAGE_MARKERS = ("<fake_token_around_image>", "<image>", "<global-img>")
# SmolVLM's chat template, with string contents (Palabre renders messages whose content is text).
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}: "
    "{{ message['content'] }}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# SmolVLM's real template, with content parts: what the Transformers loader reads the image placeholder from.
PARTS_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

CORPUS = """\
User: What is in this picture?<end_of_utterance>
Assistant: A red square on a white ground.<end_of_utterance>
User: Describe the image in one sentence.<end_of_utterance>
Assistant: It shows a small blue circle in the middle.<end_of_utterance>
User: What colour is the cat?<end_of_utterance>
Assistant: The cat is black and the sky is grey.<end_of_utterance>
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Hello world, how are you today? I am fine, thank you for asking about it.
"""


@dataclass(frozen=True)
class VisionModels:
    hf: Path  # the Transformers folder
    gguf: Path  # the text model as GGUF
    mmproj: Path  # its projector, beside it
    mrope_gguf: Path  # a tiny Qwen2-VL: its images take fewer positions than tokens (M-RoPE)
    mrope_mmproj: Path


def cache_key() -> str:
    """Changes whenever this builder or one of the libraries it relies on changes."""
    return source_key(__file__, LIBRARIES, prefix="vlm-")


def _built(root: Path) -> VisionModels:
    return VisionModels(
        hf=root / HF_NAME,
        gguf=root / "gguf" / GGUF_NAME,
        mmproj=root / "gguf" / MMPROJ_NAME,
        mrope_gguf=root / "qwen2vl" / MROPE_GGUF_NAME,
        mrope_mmproj=root / "qwen2vl" / f"mmproj-{MROPE_GGUF_NAME}",
    )


def ensure_vision_models(cache_root: Path | None = None) -> VisionModels:
    """The cached tiny vision model, building it (in a subprocess, well under a minute) on first use."""
    ensure_converter()
    root = (cache_root or default_cache_root()) / cache_key()
    build_once(root, "tests.support.vision_models", "the tiny vision model")
    return _built(root)


def solid_image(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image:
    """A one-colour picture, checked and re-encoded as the page and the APIs hand images on."""
    import io

    from PIL import Image as PILImage

    from webui.core.media import decode_image

    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, format="PNG")
    return decode_image(out.getvalue())


# -- llama.cpp's converter --------------------------------------------------------------------------------


def converter_dir() -> Path:
    """Where ``./start.sh test`` puts llama.cpp's converter (inside the virtual environment)."""
    return Path(sys.prefix) / "share" / "palabre-tests" / f"llama.cpp-convert-{LLAMA_CPP_VERSION}"


def ensure_converter() -> Path:
    """llama.cpp's ``convert_hf_to_gguf.py`` (with its ``conversion`` package and ``gguf-py``), taken from
    llama-cpp-python's source distribution on PyPI the first time (pip download, about a minute)."""
    target = converter_dir()
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="palabre-sdist-") as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                "-d",
                tmp,
            ],
            check=True,
        )
        archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        prefix = f"llama_cpp_python-{LLAMA_CPP_VERSION}/vendor/llama.cpp/"
        wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
                    continue
                relative = member.name[len(prefix) :]
                if relative.startswith(wanted):
                    member.name = relative
                    members.append(member)
            tar.extractall(staging, members=members, filter="data")
        try:
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not target.is_dir():
                raise
    return target


# -- building -----------------------------------------------------------------------------------------------


def _build_tokenizer(folder: Path) -> object:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS * 4, encoding="utf-8")
    prefix = folder / "sp"
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        # llama.cpp's libmtmd looks "\n" and "\n\n" up as whole tokens around each image (Idefics3's layout).
        user_defined_symbols=[EOS, "<|im_start|>", *IMAGE_MARKERS, "\n", "\n\n"],
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        bos_piece=BOS,
        eos_piece="</s>",
        unk_piece=UNK,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    corpus.unlink()
    shutil.move(str(prefix.with_suffix(".model")), folder / "tokenizer.model")
    prefix.with_suffix(".vocab").unlink()
    # Read back through transformers, which converts the SentencePiece model (the file stays for llama.cpp).
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": UNK,
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return tokenizer


def build(root: Path) -> VisionModels:
    import torch
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    torch.set_num_threads(1)
    torch.manual_seed(7)
    built = _built(root)
    folder = built.hf
    folder.mkdir(parents=True)
    tokenizer = _build_tokenizer(folder)
    image_processor = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=False,
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_TOKENS,
        chat_template=PARTS_TEMPLATE,
    )
    tokenizer = processor.tokenizer
    vocab = len(tokenizer)  # type: ignore[arg-type]
    config = Idefics3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "layer_norm_eps": 1e-6,
        },
        text_config={
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "bos_token_id": tokenizer.bos_token_id,  # type: ignore[attr-defined]
            "eos_token_id": tokenizer.eos_token_id,  # type: ignore[attr-defined]
            "pad_token_id": tokenizer.pad_token_id,  # type: ignore[attr-defined]
            "tie_word_embeddings": False,
        },
        scale_factor=SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),  # type: ignore[attr-defined]
        tie_word_embeddings=False,
    )
    model = Idefics3ForConditionalGeneration(config)
    with torch.no_grad():  # larger random weights: greedy replies differ visibly when the input differs
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.2)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
    )
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    # Palabre renders the conversation with the tokenizer's template (string contents).
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    _mark_added_tokens(folder, tokenizer)
    _convert(folder, built.gguf, built.mmproj)
    _build_qwen2vl(root / "qwen2vl-hf", built.mrope_gguf, built.mrope_mmproj)
    return built


def _build_qwen2vl(folder: Path, gguf: Path, mmproj: Path) -> None:
    """A tiny Qwen2-VL (M-RoPE; an image's positions are its merged grid's longest side, not its tokens),
    kept only as GGUF files: llama.cpp's projector for it sizes images dynamically (28x28 pixels a token)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    folder.mkdir(parents=True)
    tokenizer = _build_tokenizer(folder)
    config = Qwen2VLConfig(
        vision_config={
            "depth": 3,  # the converter maps the merger's layers 0 and 2 as blocks: at least three
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        text_config={
            "vocab_size": len(tokenizer),  # type: ignore[arg-type]
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": tokenizer.bos_token_id,  # type: ignore[attr-defined]
            "eos_token_id": tokenizer.eos_token_id,  # type: ignore[attr-defined]
            "pad_token_id": tokenizer.pad_token_id,  # type: ignore[attr-defined]
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),  # type: ignore[attr-defined]
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<fake_token_around_image>"),  # type: ignore[attr-defined]
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<global-img>"),  # type: ignore[attr-defined]
    )
    config.architectures = ["Qwen2VLForConditionalGeneration"]
    model = Qwen2VLForConditionalGeneration(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.2)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    _mark_added_tokens(folder, tokenizer)
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "patch_size": 4,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 64,
        "max_pixels": 64 * 64,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    _convert(folder, gguf, mmproj)
    shutil.rmtree(folder)


def _mark_added_tokens(folder: Path, tokenizer: object) -> None:
    """Name the added tokens in tokenizer_config.json, where llama.cpp's converter reads their types: the
    markers become control tokens, the newlines plain user-defined ones (as in SmolVLM's own GGUF)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    decoder = {}
    for text in (EOS, "<|im_start|>", *IMAGE_MARKERS, "\n", "\n\n"):
        token_id = tokenizer.convert_tokens_to_ids(text)  # type: ignore[attr-defined]
        decoder[str(token_id)] = {"content": text, "special": not text.isspace(), "normalized": False}
    config["added_tokens_decoder"] = {**config.get("added_tokens_decoder", {}), **decoder}
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _convert(folder: Path, gguf: Path, mmproj: Path) -> None:
    """The text model and its projector, converted by llama.cpp's own convert_hf_to_gguf.py."""
    converter = ensure_converter()
    gguf.parent.mkdir(parents=True)
    env = dict(
        os.environ, NO_LOCAL_GGUF="", PYTHONPATH=os.pathsep.join([str(converter), str(converter / "gguf-py")])
    )
    env.pop("NO_LOCAL_GGUF")
    for extra, out in (([], gguf), (["--mmproj"], mmproj)):
        result = subprocess.run(
            [
                sys.executable,
                str(converter / "convert_hf_to_gguf.py"),
                str(folder),
                "--outtype",
                "f32",
                "--outfile",
                str(out),
                *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not out.is_file():
            raise RuntimeError(
                f"convert_hf_to_gguf.py {' '.join(extra)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
            )


if __name__ == "__main__":
    if sys.argv[1:] == ["--converter"]:
        print(ensure_converter())
    elif len(sys.argv) > 1:
        print(build(Path(sys.argv[1])))
    else:
        print(ensure_vision_models())
