"""Instruction templates: the store, detection for a loaded model, and the sandbox every template renders in."""
