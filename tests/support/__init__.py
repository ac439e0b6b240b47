"""Helpers shared by the tests: servers, fakes, tiny models, hostile files (never test modules)."""
