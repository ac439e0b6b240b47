"""Reproducible benchmarks: Palabre against the raw backends it wraps, side by side in one run (``webui bench``).

Kept out of ``webui.core``: the sections import httpx, playwright, llama_cpp and torch, each only when it runs.
"""
