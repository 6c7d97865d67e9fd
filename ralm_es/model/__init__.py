"""The fine-tuned model: inputs, fusion of retrieved passages, and the task head."""
