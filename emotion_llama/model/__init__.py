"""The model and how it is built and loaded: config, LLM + LoRA, fusion, tokenizer, prompts, sequences,
checkpoints and the official-checkpoint importer."""
