"""Palabre's core: plain Python, no gradio / fastapi / torch imports (a test enforces it)."""
