"""Tokenized layer: chat-template registry (data), SpecForge-exact loss masks, fast tokenization,
content-addressed dataset cache and draft vocab mapping. No Dagster import.

Notebook use:
    from transformers import AutoTokenizer
    from specforge_assets.tokenize.core import Preprocessor, TokenizeOptions
    from specforge_assets.tokenize.templates import get_template
    pre = Preprocessor(AutoTokenizer.from_pretrained(path), get_template("qwen"), TokenizeOptions(max_length=2048))
    out = pre.process({"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    out.input_ids, out.loss_mask
"""
