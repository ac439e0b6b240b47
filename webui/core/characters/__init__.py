"""Personalities: the Character model, its files, Character Cards V2 (JSON/PNG) and Ollama Modelfiles."""
