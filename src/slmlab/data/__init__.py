"""Text to training windows: corpora (documents, filtered) -> tokenizers -> token files (memmaps,
manifest, split) -> sampling (seeded window samplers, validation batches)."""
