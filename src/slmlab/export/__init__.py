"""Models that leave the lab: Hugging Face export (native GPT-2 / Llama layouts, or remote code
for every other architecture and plugin) with the tokenizer as a Hugging Face fast tokenizer."""
