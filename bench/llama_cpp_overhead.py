"""Palabre's engine vs raw llama-cpp-python on the same GGUF, interleaved (A B A B ...), same process.

Prints medians of generation tokens/s, prompt tokens/s and time to first token for both, and the ratio
Palabre / raw. Greedy decoding, same threads, same prompt; the prompt cache is cleared before every run so both
sides evaluate the full prompt.

    .venv/bin/python bench/llama_cpp_overhead.py [--model PATH] [--rounds 5] [--tokens 128] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from webui.config import PROJECT_ROOT
from webui.core.loader import CancelToken
from webui.core.params import GenerationParams
from webui.provision import DEFAULT_MODEL_FILE

PROMPT = (
    "<|im_start|>user\nWrite a detailed essay about the history of the city of Paris, from Roman times to today, "
    "covering its architecture, politics, art and daily life.<|im_end|>\n<|im_start|>assistant\n"
)


def run_raw(llm: object, tokens: int) -> dict[str, float]:
    import llama_cpp

    model = llm  # llama_cpp.Llama
    assert isinstance(model, llama_cpp.Llama)
    model.reset()
    model._ctx.kv_cache_seq_rm(-1, 0, -1)
    prompt_tokens = model.tokenize(PROMPT.encode(), add_bos=True, special=True)
    start = time.perf_counter()
    first = 0.0
    produced = 0
    for token in model.generate(prompt_tokens, temp=0.0, top_k=1, reset=True):
        model.detokenize([token])  # any real use turns tokens into text
        produced += 1
        if produced == 1:
            first = time.perf_counter() - start
        if produced >= tokens:
            break
    total = time.perf_counter() - start
    return _rates(len(prompt_tokens), produced, first, total)


def run_palabre(model: object, tokens: int) -> dict[str, float]:
    from loaders.llama_cpp import LlamaCppModel

    assert isinstance(model, LlamaCppModel)
    model._llm.reset()
    params = GenerationParams(temperature=0, max_new_tokens=tokens, ban_eos_token=True)
    start = time.perf_counter()
    first = 0.0
    produced = 0
    prompt_tokens = 0
    for chunk in model.stream(PROMPT, params, CancelToken()):
        if chunk.tokens:
            produced += chunk.tokens
            if produced == 1:
                first = time.perf_counter() - start
        prompt_tokens = chunk.prompt_tokens or prompt_tokens
    total = time.perf_counter() - start
    return _rates(prompt_tokens, produced, first, total)


def _rates(prompt_tokens: int, produced: int, first: float, total: float) -> dict[str, float]:
    return {
        "gen_tps": (produced - 1) / (total - first) if produced > 1 else 0.0,
        "prompt_tps": prompt_tokens / first if first else 0.0,
        "ttft_s": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=PROJECT_ROOT / "user_data" / "models" / DEFAULT_MODEL_FILE
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="0 = Palabre's automatic value, used for both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import llama_cpp

    from loaders.llama_cpp import LlamaCppLoader, LlamaCppSettings, automatic_batch_threads, automatic_threads

    threads = args.threads or automatic_threads()
    settings = LlamaCppSettings(n_ctx=2048, n_threads=threads, n_threads_batch=automatic_batch_threads())
    palabre = LlamaCppLoader().load(args.model, settings)
    raw = llama_cpp.Llama(
        str(args.model),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=automatic_batch_threads(),
        verbose=False,
    )
    run_raw(raw, 8)  # warm-up both
    run_palabre(palabre, 8)
    results: dict[str, list[dict[str, float]]] = {"raw": [], "palabre": []}
    for _ in range(args.rounds):
        results["raw"].append(run_raw(raw, args.tokens))
        results["palabre"].append(run_palabre(palabre, args.tokens))
    summary = {
        side: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for side, runs in results.items()
    }
    ratios = {
        key: summary["palabre"][key] / summary["raw"][key] for key in summary["raw"] if summary["raw"][key]
    }
    report = {"model": args.model.name, "threads": threads, "rounds": args.rounds, **summary, "ratio": ratios}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"model {args.model.name}, {threads} generation thread(s), {args.rounds} rounds, medians")
    print(f"{'':>10} {'gen tok/s':>10} {'prompt tok/s':>13} {'TTFT s':>8}")
    for side in ("raw", "palabre"):
        s = summary[side]
        print(f"{side:>10} {s['gen_tps']:>10.1f} {s['prompt_tps']:>13.1f} {s['ttft_s']:>8.3f}")
    r = ratios
    print(f"{'ratio':>10} {r['gen_tps']:>10.3f} {r['prompt_tps']:>13.3f} {r['ttft_s']:>8.3f}")


if __name__ == "__main__":
    main()
