"""LLM post-training study: data, rewards, tiny test model, SFT/GRPO training, teacher data."""
