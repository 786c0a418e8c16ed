"""Model side of training: loading (dtype, tokenizer, embeddings), LoRA adapters, attention backend."""
