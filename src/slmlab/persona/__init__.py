"""SMT beyond pretraining: stage-2 persona fine-tuning, persona evaluation, Hugging Face surgery."""
