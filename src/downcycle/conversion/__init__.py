"""``downcycle convert``: a checkpoint in another format made a safetensors one that every other
stage reads: PyTorch pickles loaded with ``weights_only=True`` (:mod:`.run`), GGUF files
dequantized through transformers' loader (:mod:`.gguf`)."""
