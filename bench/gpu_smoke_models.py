"""GPU smoke of the training entry: torchrun --nproc_per_node N, NCCL, cuda:{local_rank}, publish."""

import json, os, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, os.getcwd())
from tests.helpers import toy
from specforge_assets.train.launch import prepare_launch
from specforge_assets.train.settings import train_settings

root = Path(os.environ.get("OUT", "/tmp")) / "gpu-smoke"
n = int(sys.argv[1])
tgt = root / "target"
toy.build_toy_target(tgt, pretrain_steps=20)
ds = toy.write_toy_dataset(root / "tokenized" / "dataset", n=64)
rows = toy.toy_rows(64, 24, 0)
toy.write_vocab_mapping(root / "tokenized" / "vocab_mapping" / "vocab_mapping.pt", rows, 32)
s = train_settings(
    {
        "launch": {"nproc_per_node": n, "device": "auto"},
        "training": {
            "ttt_length": 3,
            "lr": 3e-3,
            "max_steps": 20,
            "batch_size": 4,
            "max_length": 64,
            "save_every": 10,
            "log_every": 5,
        },
    }
)
spec, sp, cmd = prepare_launch(
    root=root,
    settings=s,
    target_path=tgt,
    dataset_path=ds,
    vocab_mapping_path=root / "tokenized" / "vocab_mapping",
    upstream_data_versions={},
)
t = time.time()
rc = subprocess.call(cmd)
print("rc", rc, "seconds", round(time.time() - t, 1))
print(json.dumps(json.load(open(root / "models" / "draft_model" / "manifest.json"))["launch"]))
