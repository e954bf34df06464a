"""`specforge-assets train | evaluate | build-demo-target | hidden-states` — the same code paths
as the models assets, without Dagster (training still runs under torchrun)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="train an EAGLE3 draft (torchrun; resumes from its last checkpoint)",
        description="Train the EAGLE3 draft against the target with configs/train.yaml, under torchrun "
        "(gloo on CPU, NCCL on GPU). Defaults read the data root's tokenized/ and models/ folders.",
    )
    t.add_argument("--target", help="target model folder or hub id (default: configs/target.yaml)")
    t.add_argument("--dataset", help="tokenized dataset folder/file (default: <root>/tokenized/dataset)")
    t.add_argument("--vocab-mapping", help="vocab mapping .pt or folder (default: <root>/tokenized/vocab_mapping)")
    t.add_argument("--nproc-per-node", type=int, help="processes per node (GPUs); default launch.nproc_per_node")
    t.add_argument("--device", help="auto | cpu | cuda (default launch.device)")
    t.add_argument("--mode", choices=["online", "offline"], help="default launch.mode")
    t.add_argument("--hidden-states", help="offline features folder (default <root>/models/target_hidden_states)")
    t.add_argument("--max-steps", type=int, help="override training.max_steps")
    t.add_argument("--ttt-length", type=int, help="override training.ttt_length")
    t.add_argument("--no-resume", action="store_true", help="start fresh even if a checkpoint exists")
    t.set_defaults(func=run_train)

    e = sub.add_parser(
        "evaluate",
        help="acceptance length of a draft vs an untrained draft on held-out prompts (report.json)",
    )
    e.add_argument("--target", help="target model (default: configs/target.yaml)")
    e.add_argument("--draft", help="draft checkpoint folder (default <root>/models/draft_model)")
    e.add_argument("--previous", help="another draft folder to compare (default <root>/models/draft_model_previous if present)")
    e.add_argument("--vocab-mapping", help="default <root>/tokenized/vocab_mapping")
    e.add_argument("--test", help="held-out JSONL with conversations (default <root>/mix/test.jsonl)")
    e.add_argument("--output", help="report folder (default <root>/models/draft_evaluation)")
    e.add_argument("--k", type=int, help="draft tokens per round (default evaluation.k)")
    e.add_argument("--num-prompts", type=int)
    e.add_argument("--max-new-tokens", type=int)
    e.set_defaults(func=run_evaluate)

    b = sub.add_parser("build-demo-target", help="build the small demo target (ChatML tokenizer + Qwen2) from a corpus")
    b.add_argument("--output", help="folder (default <root>/models/target_model)")
    b.add_argument("--input", nargs="*", help="JSONL files of rows (conversations/text); default: the configured sources")
    b.add_argument("--pretrain-steps", type=int)
    b.add_argument("--seed", type=int)
    b.set_defaults(func=run_build_demo_target)

    h = sub.add_parser("hidden-states", help="offline mode: write the target's hidden states for the tokenized dataset")
    h.add_argument("--target", help="default: configs/target.yaml")
    h.add_argument("--dataset", help="default <root>/tokenized/dataset")
    h.add_argument("--output", help="default <root>/models/target_hidden_states")
    h.add_argument("--max-rows", type=int)
    h.add_argument("--yes", action="store_true", help="don't stop after printing the size estimate")
    h.set_defaults(func=run_hidden_states)


def _root() -> Path:
    from ..paths import data_root

    return data_root()


def _target(arg: str | None):
    from ..target import target_model_path

    if arg:
        p = Path(arg).expanduser()
        return p.resolve() if p.exists() else arg
    return target_model_path()


def run_train(args) -> int:
    from .entry import override_settings, prepare_launch, train_settings

    root = _root()
    settings = override_settings(train_settings(), nproc_per_node=args.nproc_per_node, device=args.device,
                                 mode=args.mode, max_steps=args.max_steps, ttt_length=args.ttt_length)
    hidden = None
    if settings["launch"]["mode"] == "offline":
        hidden = Path(args.hidden_states) if args.hidden_states else root / "models" / "target_hidden_states"
    spec, spec_path, cmd = prepare_launch(
        root=root, settings=settings, target_path=_target(args.target),
        dataset_path=Path(args.dataset) if args.dataset else root / "tokenized" / "dataset",
        vocab_mapping_path=Path(args.vocab_mapping) if args.vocab_mapping else root / "tokenized" / "vocab_mapping",
        upstream_data_versions={}, hidden_states_path=hidden, resume=not args.no_resume,
    )
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


def run_evaluate(args) -> int:
    from .entry import train_settings
    from .eval_report import evaluate_drafts

    root = _root()
    ev = train_settings()["evaluation"]
    prev = Path(args.previous) if args.previous else root / "models" / "draft_model_previous"
    report = evaluate_drafts(
        target_path=_target(args.target),
        draft_dir=Path(args.draft) if args.draft else root / "models" / "draft_model",
        previous_dir=prev if prev.exists() else None,
        vocab_mapping_path=Path(args.vocab_mapping) if args.vocab_mapping else root / "tokenized" / "vocab_mapping",
        test_jsonl=Path(args.test) if args.test else root / "mix" / "test.jsonl",
        out_dir=Path(args.output) if args.output else root / "models" / "draft_evaluation",
        k=args.k or int(ev["k"]),
        max_new_tokens=args.max_new_tokens or int(ev["max_new_tokens"]),
        num_prompts=args.num_prompts or int(ev["num_prompts"]),
        max_prompt_tokens=int(ev["max_prompt_tokens"]),
        untrained_seed=int(ev["untrained_seed"]),
    )
    print(json.dumps({k: report[k] for k in ("acceptance_length", "untrained_acceptance_length",
                                             "per_position_acceptance", "k", "lossless", "num_prompts", "checkpoint_path")}))
    return 0 if report["lossless"] else 1


def run_build_demo_target(args) -> int:
    from ..fileio import iter_jsonl
    from .demo_target import build_demo_target, build_params, load_demo_corpus
    from .entry import train_settings

    params = dict(train_settings()["demo_target"])
    keys = params.pop("sources", None)
    if args.pretrain_steps is not None:
        params["pretrain_steps"] = args.pretrain_steps
    if args.seed is not None:
        params["seed"] = args.seed
    if args.input:
        rows = [r for f in args.input for r in iter_jsonl(f)]
    else:
        rows, _ = load_demo_corpus(keys)
    out = Path(args.output) if args.output else _root() / "models" / "target_model"
    build_demo_target(out, rows, **build_params(**params))
    return 0


def run_hidden_states(args) -> int:
    from .entry import train_settings
    from .hidden_states import estimate_size, write_hidden_states

    root = _root()
    settings = train_settings()
    hs = settings["hidden_states"]
    # rows are stored truncated exactly as training will read them
    max_length = int(settings["training"].get("max_length", 2048))
    aux = settings["training"].get("aux_layer_ids")
    target = _target(args.target)
    dataset = Path(args.dataset) if args.dataset else root / "tokenized" / "dataset"
    out = Path(args.output) if args.output else root / "models" / "target_hidden_states"
    max_rows = args.max_rows if args.max_rows is not None else hs.get("max_rows")
    est = estimate_size(target, dataset, dtype=hs["dtype"], max_rows=max_rows, max_length=max_length)
    print(json.dumps({"estimate": est}))
    if not args.yes:
        print("re-run with --yes to write", file=sys.stderr)
        return 0
    info = write_hidden_states(target, dataset, out, rows_per_shard=int(hs["rows_per_shard"]), dtype=hs["dtype"],
                               max_rows=max_rows, max_length=max_length, aux_layer_ids=aux)
    print(json.dumps({k: v for k, v in info.items() if k != "shards"}))
    return 0
