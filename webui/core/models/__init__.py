"""Model files: discovery in user_data/models, facts read from GGUF headers and config.json, names decoded."""
