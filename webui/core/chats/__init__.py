"""Conversations: the SQLite store, its records and their validation, imports, and chats saved as they happen."""
