"""The Hugging Face Hub: references and file names, resumable verified downloads, the local Hub cache."""
