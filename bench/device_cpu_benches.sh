#!/usr/bin/env bash
# The CPU benchmarks of bench/RESULTS.md, re-run on a machine without this repository's git
# history or a package index (the lent GPU host: 16 cores), each against the code of a baseline
# tree measured in the same run. Usage, from the repository root:
#   bench/device_cpu_benches.sh WHEELS_DIR BASELINE_TREE OUT_DIR [NAMES]
# WHEELS_DIR: the project's wheels for that Python (installed with --target, not over the system);
# BASELINE_TREE: `git archive <rev> specforge_assets configs dagster_home/dagster.yaml
# workspace.yaml pyproject.toml`, extracted. Each benchmark's JSON and log land in OUT_DIR.
# NAMES: the benchmarks to run (default: all: steps regenerate demo mix sources ttt).
set -uo pipefail
wheels=$1 base=$2 out=$3 names=" ${4:-steps regenerate demo mix sources ttt} "
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$wheels"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 DAGSTER_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
python3 -c "import dagster, duckdb, aiohttp, matplotlib, yaml, transformers, specforge_assets.definitions; print('preflight ok', dagster.__version__, transformers.__version__)" || exit 1
{ nproc; python3 --version; python3 -c "import torch; print('torch', torch.__version__)"; } > "$out/machine.txt" 2>&1
run() {  # run NAME RESULT_JSON COMMAND...: time it, keep its log and result
  local name=$1 result=$2; shift 2
  [[ $names == *" $name "* ]] || return 0
  local t0=$SECONDS
  "$@" > "$out/$name.log" 2>&1
  echo "$name rc=$? $((SECONDS - t0))s" >> "$out/done.txt"
  [ -f "$result" ] && cp "$result" "$out/"
}
run steps bench/results/steps.json python3 bench/bench_steps.py --repeats 2 --baseline-rev "$base"
run regenerate bench/results/regenerate.json python3 bench/bench_regenerate.py --only realistic --before "$base" --rows 30000
run demo bench/results/demo.json python3 bench/bench_demo.py
run mix bench/results/mix.json python3 bench/bench_mix.py --rows 150000 --baseline-rev "$base"
run sources "$out/sources.json" python3 bench/bench_sources.py --out "$out/sources.json"
run ttt "$out/train_ttt_cpu.json" env OMP_NUM_THREADS=1 python3 bench/bench_train_ttt.py --out "$out/train_ttt_cpu.json"
echo finished >> "$out/done.txt"
