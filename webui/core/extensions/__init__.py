"""Extensions: pluggy hook specifications, discovery, the manager that calls them, and the API for their authors."""
