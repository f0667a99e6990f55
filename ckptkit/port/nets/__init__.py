"""One Keras 3 builder per slim family, `build(slim, record, inputs) -> logits`, named by
each NetRecord's `keras` field (zoo/nets.py)."""
