"""`specforge-assets train | evaluate | build-demo-target | hidden-states` — the same code paths
as the models assets, without Dagster (training still runs under torchrun)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def _flag_type(info) -> dict:
    """argparse's `type` / `choices` for a pydantic field (int, str, a Literal; X | None → X)."""
    import typing

    ann = info.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) is typing.Literal:
        return {"choices": list(typing.get_args(ann))}
    if args and typing.get_origin(ann) is not typing.Annotated:
        ann = args[0]
    return {"type": int} if ann is int else {}


def register(sub: argparse._SubParsersAction) -> None:
    from .settings import OVERRIDES, override_field

    t = sub.add_parser(
        "train",
        help="train an EAGLE3 draft (torchrun; resumes from its last checkpoint)",
        description="Train the EAGLE3 draft against the target with configs/train.yaml, under torchrun "
        "(gloo on CPU, NCCL on GPU). Defaults read the data root's tokenized/ and models/ folders.",
    )
    t.add_argument("--target", help="target model folder or hub id (default: configs/target.yaml)")
    t.add_argument("--dataset", help="tokenized dataset folder/file (default: <root>/tokenized/dataset)")
    t.add_argument("--vocab-mapping", help="vocab mapping .pt or folder (default: <root>/tokenized/vocab_mapping)")
    for name, override in OVERRIDES.items():  # the per-run overrides: one list, in train/settings.py
        t.add_argument("--" + name.replace("_", "-"), help=override.help, **_flag_type(override_field(name)))
        if name == "mode":  # the other flags keep their place in --help
            t.add_argument(
                "--hidden-states", help="offline features folder (default <root>/models/target_hidden_states)"
            )
        elif name == "ttt_length":
            t.add_argument("--no-resume", action="store_true", help="start fresh even if a checkpoint exists")
    t.set_defaults(func=run_train)

    e = sub.add_parser(
        "evaluate",
        help="acceptance length of a draft vs an untrained draft on held-out prompts (report.json)",
    )
    e.add_argument("--target", help="target model (default: configs/target.yaml)")
    e.add_argument("--draft", help="draft checkpoint folder (default <root>/models/draft_model)")
    e.add_argument(
        "--previous",
        help="another draft folder to compare (default <root>/models/draft_model_previous if present "
        "and evaluation.evaluate_previous)",
    )
    e.add_argument("--vocab-mapping", help="default <root>/tokenized/vocab_mapping")
    e.add_argument("--test", help="held-out JSONL with conversations (default <root>/mix/test.jsonl)")
    e.add_argument("--output", help="report folder (default <root>/models/draft_evaluation)")
    e.add_argument(
        "--k", type=int, nargs="+", help="draft tokens per round, one or several (--k 4 7); default evaluation.k"
    )
    e.add_argument(
        "--set",
        dest="sets",
        action="append",
        metavar="NAME=PATH[:FORMAT]",
        help="an evaluation prompt set (repeatable; replaces evaluation.sets): FORMAT heldout | mtbench | "
        "questions (default: from the first row); PATH relative to the current directory",
    )
    e.add_argument("--num-prompts", type=int)
    e.add_argument("--max-new-tokens", type=int)
    e.add_argument("--device", help="cpu | cuda | cuda:N | auto (default evaluation.device: auto = CUDA when visible)")
    e.add_argument(
        "--workers",
        type=int,
        help="evaluation processes, each taking a slice of every set's prompts (default evaluation.workers)",
    )
    e.set_defaults(func=run_evaluate)

    b = sub.add_parser("build-demo-target", help="build the small demo target (ChatML tokenizer + Qwen2) from a corpus")
    b.add_argument("--output", help="folder (default <root>/models/target_model)")
    b.add_argument(
        "--input", nargs="*", help="JSONL files of rows (conversations/text); default: the configured sources"
    )
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
    """The data root: where the *defaults* live (`<root>/tokenized/dataset`, ...). Paths typed on
    the command line never go through it (see `_path`)."""
    from ..paths import data_root

    return data_root()


def _path(arg: str | None, default: Path) -> Path:
    """A command-line path, relative to the current directory like every CLI tool's (made absolute
    here, so a launch spec written now still points at it from any directory); else the default
    under the data root."""
    if arg:
        return Path(arg).expanduser().resolve()
    return default


def _looks_like_path(arg: str) -> bool:
    return arg.startswith((".", "/", "~")) or arg.count("/") >= 2


def _target(arg: str | None):
    """--target: a folder (relative to the current directory) or a hub id ("org/name"); default
    configs/target.yaml."""
    from ..target import target_model_path
    from .errors import TrainFileNotFound

    if arg:
        p = Path(arg).expanduser()
        if p.exists():
            return p.resolve()
        if _looks_like_path(arg):
            raise TrainFileNotFound(
                f"--target {arg}: no such folder (command-line paths are relative to the current "
                f"directory {Path.cwd()}); give a model folder or a hub id org/name"
            )
        return arg
    return target_model_path()


def run_train(args) -> int:
    from .launch import join_command, prepare_launch
    from .settings import OVERRIDES, override_settings, train_settings

    root = _root()
    settings = override_settings(train_settings(), **{name: getattr(args, name) for name in OVERRIDES})
    if settings["launch"]["node_rank"] > 0:
        # another node's run: nothing to prepare here, the spec comes from node 0 at the rendezvous
        cmd = join_command(settings["launch"])
        print(" ".join(cmd), flush=True)
        return subprocess.call(cmd)
    hidden = None
    if settings["launch"]["mode"] == "offline":
        hidden = _path(args.hidden_states, root / "models" / "target_hidden_states")
    spec, spec_path, cmd = prepare_launch(
        root=root,
        settings=settings,
        target_path=_target(args.target),
        dataset_path=_path(args.dataset, root / "tokenized" / "dataset"),
        vocab_mapping_path=_path(args.vocab_mapping, root / "tokenized" / "vocab_mapping"),
        upstream_data_versions={},
        hidden_states_path=hidden,
        resume=not args.no_resume,
    )
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


def run_evaluate(args) -> int:
    from ..target import target_config
    from .eval_report import evaluate_from_settings
    from .settings import train_settings

    root = _root()
    ev = train_settings()["evaluation"]
    prev = Path(args.previous).expanduser().resolve() if args.previous else None  # as `_path`
    if prev is not None and not prev.exists():
        from .errors import TrainFileNotFound

        raise TrainFileNotFound(f"--previous {args.previous}: no such folder")
    report = evaluate_from_settings(
        ev,
        root=root,
        target_path=_target(args.target),
        trust_remote_code=target_config()["trust_remote_code"],
        draft_dir=_path(args.draft, root / "models" / "draft_model"),
        previous_dir=prev,
        vocab_mapping_path=_path(args.vocab_mapping, root / "tokenized" / "vocab_mapping"),
        test_jsonl=_path(args.test, root / "mix" / "test.jsonl"),
        out_dir=_path(args.output, root / "models" / "draft_evaluation"),
        sets=_eval_sets_arg(args.sets) if args.sets else None,
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        num_prompts=args.num_prompts,
        device=args.device,
        workers=args.workers,
    )
    print(
        json.dumps(
            {
                **{
                    k: report[k]
                    for k in (
                        "acceptance_length",
                        "untrained_acceptance_length",
                        "per_position_acceptance",
                        "k",
                        "lossless",
                        "num_prompts",
                        "checkpoint_path",
                    )
                },
                "sets": {
                    n: {kk: e["acceptance_length"] for kk, e in by_k.items()} for n, by_k in report["sets"].items()
                },
            }
        )
    )
    return 0 if report["lossless"] else 1


def _eval_sets_arg(arg: list[str]) -> list[dict]:
    """--set NAME=PATH[:FORMAT] (paths relative to the current directory), checked by `eval_sets`;
    they replace evaluation.sets."""
    from .errors import TrainInputError
    from .eval_report import SET_FORMATS, eval_sets

    specs = []
    for a in arg:
        name, sep, rest = a.partition("=")
        if not sep or not name.strip() or not rest:
            raise TrainInputError(f"--set {a!r}: want NAME=PATH[:FORMAT] (FORMAT {' | '.join(SET_FORMATS)})")
        path, fmt = rest, None
        head, colon, tail = rest.rpartition(":")
        if colon and tail in SET_FORMATS:
            path, fmt = head, tail
        specs.append({"name": name.strip(), "path": str(Path(path).expanduser().resolve()), "format": fmt})
    return eval_sets({"sets": specs})


def run_build_demo_target(args) -> int:
    from ..fileio import iter_jsonl
    from .demo_target import build_demo_target, build_params, load_demo_corpus
    from .settings import train_settings

    params = dict(train_settings()["demo_target"])
    keys = params.pop("sources", None)
    if args.pretrain_steps is not None:
        params["pretrain_steps"] = args.pretrain_steps
    if args.seed is not None:
        params["seed"] = args.seed
    if args.input:
        rows = []
        for f in args.input:
            p = _path(f, Path(f))
            if not p.is_file():
                from .errors import TrainFileNotFound

                raise TrainFileNotFound(
                    f"--input {f}: file not found (command-line paths are relative to the current directory)"
                )
            unreadable: list = []
            rows.extend(iter_jsonl(p, errors=unreadable))
            for lineno, e in unreadable[:10]:
                print(f"skipped {f}:{lineno}: {e}", file=sys.stderr)
            if unreadable:
                print(f"build-demo-target: {len(unreadable)} unreadable rows of {f} skipped", file=sys.stderr)
    else:
        rows, _ = load_demo_corpus(keys)
    out = _path(args.output, _root() / "models" / "target_model")
    build_demo_target(out, rows, **build_params(**params))
    return 0


def run_hidden_states(args) -> int:
    from .settings import make_train_config, train_settings
    from .hidden_states import estimate_size, write_hidden_states

    root = _root()
    settings = train_settings()
    hs = settings["hidden_states"]
    # rows are stored truncated exactly as training will read them
    training = make_train_config(settings["training"])
    max_length, aux = training.max_length, training.aux_layer_ids
    target = _target(args.target)
    dataset = _path(args.dataset, root / "tokenized" / "dataset")
    out = _path(args.output, root / "models" / "target_hidden_states")
    max_rows = args.max_rows if args.max_rows is not None else hs["max_rows"]
    est = estimate_size(target, dataset, dtype=hs["dtype"], max_rows=max_rows, max_length=max_length)
    print(json.dumps({"estimate": est}))
    if not args.yes:
        print("re-run with --yes to write", file=sys.stderr)
        return 0
    info = write_hidden_states(
        target,
        dataset,
        out,
        rows_per_shard=int(hs["rows_per_shard"]),
        dtype=hs["dtype"],
        max_rows=max_rows,
        max_length=max_length,
        aux_layer_ids=aux,
    )
    print(json.dumps({k: v for k, v in info.items() if k != "shards"}))
    return 0
