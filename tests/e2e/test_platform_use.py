"""The platform used the way a user uses it, in a real browser against a real `dagster dev`:
work happens only when something changed.

1. Everything materialized once (over GraphQL), then a backfill of every source partition launched
   from the UI with nothing changed: no new data version anywhere, no mix/tokenize/draft
   materialization and no retraining run, after the daemon has settled (every run finished and
   two ticks of the automation and retraining sensors since).
2. One source file changes, its partition is materialized from the UI: that partition, the mix,
   tokenized (and maybe the vocab) get new versions, exactly one retraining run, tagged with the
   new tokenized version.
3. The charts as a user sees them on the asset pages (mix, tokenized, draft, evaluation):
   screenshots in tests/_artifacts/chart-*.png (and docs/img/ with SPECFORGE_E2E_SCREENSHOTS=1).
4. Two back-to-back retrainings (beta changed twice, the second version made while the first
   retraining is queued or running): one run per version, each draft trained on its run's version
   and each evaluation (same run) on exactly that draft and the draft's inputs.

Own `dagster dev` (module fixture `dagster` overrides conftest's): two source partitions read
from files under the temp data root, tiny demo target/training settings. The tests run in file
order and build on each other. Run: pytest -m browser tests/e2e/test_platform_use.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import (  # noqa: E402  (tests/e2e/conftest.py: the harness)
    ARTIFACTS,
    CHROMIUM,
    LOCATION,
    REPO,
    Dagster,
    _deep_merge,
    _free_port,
    _stop_group,
    _wait_loaded,
)
from models.corpus import conversations  # noqa: E402

from specforge_assets.lineage import inputs_by_asset  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_IMG = REPO / "docs" / "img"
KEYS = ["alpha", "beta"]
SOURCES_KEY = ["sources", "conversations"]
REGEN_KEY = ["regenerated", "conversations"]
MIX_KEY = ["mix", "training_mix"]
TOK_KEY = ["tokenized", "dataset"]
VOCAB_KEY = ["tokenized", "vocab_mapping"]
TARGET_KEY = ["models", "target_model"]
DRAFT_KEY = ["models", "draft_model"]
EVAL_KEY = ["models", "draft_evaluation"]
ALL_KEYS = [SOURCES_KEY, REGEN_KEY, MIX_KEY, TOK_KEY, VOCAB_KEY, TARGET_KEY, DRAFT_KEY, EVAL_KEY]
RETRAIN_JOB = "retrain_draft_job"
SENSORS = ["specforge_automation", "retrain_on_new_dataset"]
RUN_TIMEOUT = 600  # a loaded 2-core box: one process per run, the retraining runs torchrun
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
ACTIVE = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "MANAGED"]

OVERRIDES = {
    "regenerate": {"sources": {}},
    "train": {
        # enough logged steps for a loss curve worth looking at, still seconds on a CPU
        "training": {"max_steps": 10, "batch_size": 2, "max_length": 64, "save_every": 5, "log_every": 1},
        "evaluation": {"num_prompts": 2, "max_new_tokens": 6, "evaluate_previous": False},
        "demo_target": {"pretrain_steps": 4, "hidden_size": 32, "vocab_size": 512},
    },
    "tokenize": {"max_length": 128},
    "mix": {"eval": {"min_rows": 4, "fraction": 0.1}},
    "automation": {
        "sensors": {
            "incoming_files": {"minimum_interval_seconds": 3, "settle_seconds": 1},
            "register_sources": {"minimum_interval_seconds": 3},
            "retrain": {"minimum_interval_seconds": 3, "max_retries": 0},
            "run_failures": {"minimum_interval_seconds": 3},
        },
        "automation": {"minimum_interval_seconds": 5},
    },
}


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".part")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.rename(path)


def _write_configs(dest: Path, files: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in (REPO / "configs").glob("*.yaml"):
        shutil.copyfile(f, dest / f.name)
    src = yaml.safe_load((dest / "sources.yaml").read_text()) or {}
    src["sources"] = {k: {"format": "conversations", "data_path": str(files / f"{k}.jsonl")} for k in KEYS}
    (dest / "sources.yaml").write_text(yaml.safe_dump(src, sort_keys=False))
    for name, over in OVERRIDES.items():
        path = dest / f"{name}.yaml"
        cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
        path.write_text(yaml.safe_dump(_deep_merge(cfg or {}, over), sort_keys=False))


ROWS = conversations(72)


@pytest.fixture(scope="module")
def dagster():
    """A `dagster dev` of its own: two file sources (alpha, beta) and tiny settings."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); browser tests need it")
    base = Path(tempfile.mkdtemp(prefix="sfuse-", dir="/tmp"))
    home, data_root, config_dir, files = base / "home", base / "data", base / "configs", base / "files"
    for d in (home, data_root, files):
        d.mkdir()
    _write_rows(files / "alpha.jsonl", ROWS[:40])
    _write_rows(files / "beta.jsonl", ROWS[40:])
    shutil.copyfile(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    _write_configs(config_dir, files)
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SPECFORGE_DATA_ROOT": str(data_root),
        "SPECFORGE_CONFIG_DIR": str(config_dir),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(base),
    }
    import subprocess

    log = base / "dagster-dev.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "dev",
                "-w",
                str(REPO / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    d = Dagster(f"http://127.0.0.1:{port}", home, data_root, config_dir, proc, log)
    d.files = files
    try:
        _wait_loaded(d, timeout=300)
        yield d
    finally:
        d.client.close()
        _stop_group(proc)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, ARTIFACTS / "platform-use-dagster-dev.log")
        shutil.rmtree(base, ignore_errors=True)


# -- GraphQL helpers ------------------------------------------------------------------------------


def _graphql_response(op: str):
    return lambda r: "/graphql" in r.url and r.request.method == "POST" and op in (r.request.post_data or "")


def _tags(obj: dict) -> dict:
    return {t["key"]: t["value"] for t in obj["tags"]}


def _runs(dagster, job: str | None = None, statuses: list[str] | None = None, limit: int = 200) -> list[dict]:
    flt: dict = {}
    if job:
        flt["pipelineName"] = job
    if statuses:
        flt["statuses"] = statuses
    q = """query($f: RunsFilter, $n: Int) { runsOrError(filter: $f, limit: $n) { __typename
             ... on Runs { results { runId status jobName creationTime endTime tags { key value } } } } }"""
    return dagster.gql(q, f=flt, n=limit)["runsOrError"]["results"]


def _wait_run(dagster, run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
    q = "query($id: ID!) { runOrError(runId: $id) { ... on Run { runId status tags { key value } } } }"

    def done():
        run = dagster.gql(q, id=run_id)["runOrError"]
        return run if run.get("status") in TERMINAL else None

    run = dagster.wait(done, timeout, f"run {run_id} to finish", interval=3)
    assert run["status"] == "SUCCESS", f"run {run_id} ended {run['status']}\n{dagster.log_tail()}"
    return run


def _launch(dagster, job: str, tags: dict | None = None, assets: list[list[str]] | None = None) -> str:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "pipelineName": job}
    if assets:
        selector["assetSelection"] = [{"path": p} for p in assets]
    q = """mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) { __typename
             ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
             ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
    params = {
        "selector": selector,
        "mode": "default",
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    res = dagster.gql(q, p=params)["launchPipelineExecution"]
    assert res["__typename"] == "LaunchRunSuccess", res
    return res["run"]["runId"]


def _materializations(dagster, path: list[str], limit: int = 200) -> list[dict]:
    """Newest first: {partition, runId, version}."""
    return [
        {"partition": m["partition"], "runId": m["runId"], "version": _tags(m).get("dagster/data_version")}
        for m in dagster.materializations(path, limit=limit)
    ]


def _snapshot(dagster) -> dict:
    """{asset[/partition]: latest data version} and {asset: number of materializations}."""
    versions, counts = {}, {}
    for key in ALL_KEYS:
        mats = _materializations(dagster, key)
        name = "/".join(key)
        counts[name] = len(mats)
        for m in reversed(mats):  # oldest first, so the newest wins
            versions[name + (f"/{m['partition']}" if m["partition"] else "")] = m["version"]
    return {"versions": versions, "counts": counts}


def _sensor_ticks(dagster, name: str) -> list[float]:
    q = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename
             ... on Sensor { sensorState { ticks(limit: 10) { timestamp status } } } ... on PythonError { message } } }"""
    res = dagster.gql(
        q, s={"repositoryName": "__repository__", "repositoryLocationName": LOCATION, "sensorName": name}
    )["sensorOrError"]
    assert res["__typename"] == "Sensor", res
    return [t["timestamp"] for t in res["sensorState"]["ticks"]]


def _settle(dagster, timeout: float = RUN_TIMEOUT) -> None:
    """Wait until no run is queued or in progress and both the automation sensor and the
    retraining sensor have ticked twice since (so whatever they would start has been started)."""
    deadline = time.monotonic() + timeout
    while True:
        dagster.wait(
            lambda: not _runs(dagster, statuses=ACTIVE),
            max(deadline - time.monotonic(), 1),
            "every run to finish",
            interval=3,
        )
        quiet_since = time.time()
        dagster.wait(
            lambda: all(sum(t > quiet_since for t in _sensor_ticks(dagster, s)) >= 2 for s in SENSORS),
            max(deadline - time.monotonic(), 1),
            "two ticks of each sensor",
            interval=3,
        )
        if not _runs(dagster, statuses=ACTIVE) and not [
            r for r in _runs(dagster, limit=20) if r["creationTime"] > quiet_since
        ]:
            return
        assert time.monotonic() < deadline, "the daemon did not settle"


def _latest_version(dagster, path: list[str]) -> str:
    return _materializations(dagster, path, limit=1)[0]["version"]


# -- the tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def materialized(dagster):
    """Everything materialized once: the target, both source partitions (the job a backfill runs),
    then the automation's mix/tokenize run and the retraining sensor's run."""
    dagster.wait(lambda: set(KEYS) <= set(dagster.partitions()), 120, "the configured partitions")
    _wait_run(dagster, _launch(dagster, "__ASSET_JOB", assets=[TARGET_KEY]))
    for run_id in [_launch(dagster, "sources_and_regenerated", tags={"dagster/partition": k}) for k in KEYS]:
        _wait_run(dagster, run_id)
    retrain = dagster.wait(lambda: _runs(dagster, job=RETRAIN_JOB), RUN_TIMEOUT, "the first retraining run", interval=3)
    _wait_run(dagster, retrain[0]["runId"])
    _settle(dagster)
    snap = _snapshot(dagster)
    for key in (MIX_KEY, TOK_KEY, DRAFT_KEY, EVAL_KEY):
        assert snap["counts"]["/".join(key)] == 1, snap["counts"]
    assert len(_runs(dagster, job=RETRAIN_JOB)) == 1
    return snap


def test_1_unchanged_backfill_from_the_ui_changes_nothing(page, dagster, materialized):
    before = _snapshot(dagster)
    retrain_before = _runs(dagster, job=RETRAIN_JOB)

    page.goto("/assets/" + "/".join(SOURCES_KEY))
    page.get_by_role("button", name=re.compile(r"Materialize…$")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_text(f"{len(KEYS)} partitions").first.wait_for()
    launch = dialog.get_by_role("button", name="Launch backfill")
    with page.expect_response(_graphql_response("LaunchPartitionBackfill")) as resp:
        launch.click()
    backfill_id = resp.value.json()["data"]["launchPartitionBackfill"]["backfillId"]

    q = "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"
    status = dagster.wait(
        lambda: (s := dagster.gql(q, id=backfill_id)["partitionBackfillOrError"]["status"]) not in {"REQUESTED"} and s,
        RUN_TIMEOUT,
        f"backfill {backfill_id}",
        interval=3,
    )
    assert status == "COMPLETED_SUCCESS", status
    backfill_runs = dagster.runs({"dagster/backfill": backfill_id})
    assert sorted(_tags(r)["dagster/partition"] for r in backfill_runs) == KEYS
    assert all(r["status"] == "SUCCESS" for r in backfill_runs), backfill_runs
    _settle(dagster)

    after = _snapshot(dagster)
    # the sources were materialized again (the backfill ran), with the same data versions
    assert after["counts"]["sources/conversations"] == before["counts"]["sources/conversations"] + len(KEYS)
    assert after["versions"] == before["versions"]
    for key in (MIX_KEY, TOK_KEY, VOCAB_KEY, DRAFT_KEY, EVAL_KEY, TARGET_KEY):
        name = "/".join(key)
        assert after["counts"][name] == before["counts"][name], f"{name} materialized again"
    assert _runs(dagster, job=RETRAIN_JOB) == retrain_before, "an unchanged backfill started a retraining"

    page.goto(f"/runs/b/{backfill_id}")
    page.get_by_text("Succeeded").first.wait_for()


def test_2_changed_file_materializes_that_partition_mix_tokenized_and_one_retraining(page, dagster, materialized):
    before = _snapshot(dagster)
    retrain_before = {r["runId"] for r in _runs(dagster, job=RETRAIN_JOB)}
    _write_rows(
        dagster.files / "alpha.jsonl",
        ROWS[:40]
        + [
            {
                "id": "row-new",
                "conversations": [
                    {"role": "user", "content": "What is new in alpha?"},
                    {"role": "assistant", "content": "A new row for alpha, so alpha has a new data version."},
                ],
            }
        ],
    )

    page.goto("/assets/" + "/".join(SOURCES_KEY))
    page.get_by_role("button", name=re.compile(r"Materialize…$")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem", name=re.compile(r"^alpha")).click()
    page.keyboard.press("Escape")  # close the menu, not the dialog
    dialog.get_by_text("1 partition").first.wait_for()
    with page.expect_response(_graphql_response("LaunchPipelineExecution")) as resp:
        dialog.get_by_role("button", name="Launch 1 run").click()
    run_id = resp.value.json()["data"]["launchPipelineExecution"]["run"]["id"]
    assert _tags(_wait_run(dagster, run_id))["dagster/partition"] == "alpha"

    new = dagster.wait(
        lambda: [r for r in _runs(dagster, job=RETRAIN_JOB) if r["runId"] not in retrain_before],
        RUN_TIMEOUT,
        "the retraining run for the changed file",
        interval=3,
    )
    _wait_run(dagster, new[0]["runId"])
    _settle(dagster)

    after = _snapshot(dagster)
    new = [r for r in _runs(dagster, job=RETRAIN_JOB) if r["runId"] not in retrain_before]
    assert len(new) == 1, f"{len(new)} retraining runs for one changed file"
    tok_version = _latest_version(dagster, TOK_KEY)
    assert _tags(new[0])["specforge/trigger_data_version"] == tok_version
    changed = {k for k in before["versions"] if before["versions"][k] != after["versions"].get(k)}
    must = {
        "sources/conversations/alpha",
        "regenerated/conversations/alpha",
        "mix/training_mix",
        "tokenized/dataset",
        "models/draft_model",
        "models/draft_evaluation",
    }
    # (the vocab mapping changes only if the new row moves the top-N token set)
    assert must <= changed <= must | {"tokenized/vocab_mapping"}, changed
    for key in (MIX_KEY, TOK_KEY, DRAFT_KEY, EVAL_KEY):
        name = "/".join(key)
        assert after["counts"][name] == before["counts"][name] + 1, (name, before["counts"], after["counts"])
    draft = dagster.materializations(DRAFT_KEY, limit=1)[0]
    assert draft["runId"] == new[0]["runId"]

    page.goto(f"/runs/{new[0]['runId']}")
    page.get_by_text("retrain_on_new_dataset").first.wait_for()
    page.get_by_text("Success").first.wait_for()


CHARTS = {
    # asset: metadata entries to show (the first is scrolled into view), what the picture shows
    "mix/training_mix": ["realized_mix_table", "mix_chart_inline"],  # table + rows-per-source bars
    "tokenized/dataset": ["length_histogram_inline"],  # tokens per row
    "models/draft_model": ["loss_curve", "metrics"],  # loss per logged step
    # per-category table, per-position table and bars (trained vs untrained)
    "models/draft_evaluation": ["acceptance_per_category", "per_position_acceptance", "acceptance_inline"],
}


@pytest.mark.parametrize("asset", list(CHARTS))
def test_3_chart_screenshot(browser, dagster, materialized, asset):
    ctx = browser.new_context(viewport={"width": 1600, "height": 2000}, base_url=dagster.url)
    ctx.set_default_timeout(60_000)
    page = ctx.new_page()
    try:
        page.goto(f"/assets/{asset}")
        entries = CHARTS[asset]
        for name in entries:
            page.get_by_text(name, exact=True).first.wait_for()
        # the metadata table scrolls inside the page's own container: centre the chart in it
        page.get_by_text(entries[0], exact=True).first.evaluate("e => e.scrollIntoView({block: 'center'})")
        # the label renders before its markdown value: wait for the inline picture itself (a page
        # without one times out here), then for every picture to be decoded
        inline = "Array.from(document.images).filter(i => i.src.startsWith('data:image'))"
        try:
            page.wait_for_function(f"() => {inline}.length > 0")
        except Exception as e:  # noqa: BLE001 - reported as the assertion below
            raise AssertionError(f"no inline chart on /assets/{asset}") from e
        page.wait_for_function("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        time.sleep(1)  # only for the picture: let the layout settle after the scroll
        name = "chart-" + asset.split("/")[1] + ".png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        if os.environ.get("SPECFORGE_E2E_SCREENSHOTS"):
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ARTIFACTS / name, DOCS_IMG / name)
    finally:
        ctx.close()


# -- back-to-back retrainings ---------------------------------------------------------


def _materialize_partition_from_ui(page, partition: str) -> str:
    """Asset page of sources/conversations → Materialize… → one partition → Launch 1 run."""
    page.goto("/assets/" + "/".join(SOURCES_KEY))
    page.get_by_role("button", name=re.compile(r"Materialize…$")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem", name=re.compile(rf"^{partition}")).click()
    page.keyboard.press("Escape")  # close the menu, not the dialog
    dialog.get_by_text("1 partition").first.wait_for()
    with page.expect_response(_graphql_response("LaunchPipelineExecution")) as resp:
        dialog.get_by_role("button", name="Launch 1 run").click()
    return resp.value.json()["data"]["launchPipelineExecution"]["run"]["id"]


def _change_beta(n: int, files: Path) -> None:
    extra = [
        {
            "id": f"beta-extra-{n}-{i}",
            "conversations": [
                {"role": "user", "content": f"Extra question {n}.{i}?"},
                {"role": "assistant", "content": f"Extra answer {n}.{i}, new in version {n} of beta."},
            ],
        }
        for i in range(3)
    ]
    _write_rows(files / "beta.jsonl", ROWS[40:] + extra)


def _md_materializations(dagster, path: list[str], limit: int = 50) -> list[dict]:
    """Newest first: {runId, version, md: {label: value}} (text, json parsed, path, numbers)."""
    q = """query($k: AssetKeyInput!, $n: Int) { assetOrError(assetKey: $k) { ... on Asset {
             assetMaterializations(limit: $n) { runId tags { key value } metadataEntries { label
               ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
               ... on PathMetadataEntry { path } } } } } }"""
    out = []
    for m in dagster.gql(q, k={"path": path}, n=limit)["assetOrError"]["assetMaterializations"]:
        md = {}
        for e in m["metadataEntries"]:
            if "jsonString" in e:
                md[e["label"]] = json.loads(e["jsonString"])
            elif "text" in e:
                md[e["label"]] = e["text"]
            elif "path" in e:
                md[e["label"]] = e["path"]
        out.append({"runId": m["runId"], "version": _tags(m).get("dagster/data_version"), "md": md})
    return out


def _new_retraining_runs(dagster, known: set[str]) -> list[dict]:
    return sorted(
        (r for r in _runs(dagster, job=RETRAIN_JOB) if r["runId"] not in known), key=lambda r: r["creationTime"]
    )


def test_4_two_back_to_back_retrainings_each_evaluation_matches_its_draft(page, dagster, materialized):
    known = {r["runId"] for r in _runs(dagster, job=RETRAIN_JOB)}
    requested: list[dict] = []
    for n in (1, 2):
        _change_beta(n, dagster.files)
        _wait_run(dagster, _materialize_partition_from_ui(page, "beta"))
        # the next version is made while this retraining is queued or running (not waited for)
        run = dagster.wait(
            lambda: [
                r for r in _new_retraining_runs(dagster, known) if r["runId"] not in {x["runId"] for x in requested}
            ],
            RUN_TIMEOUT,
            f"the retraining run for beta version {n}",
            interval=3,
        )[0]
        requested.append(run)
    for run in requested:
        _wait_run(dagster, run["runId"])
    _settle(dagster)

    new = _new_retraining_runs(dagster, known)
    assert [r["runId"] for r in new] == [r["runId"] for r in requested], "one retraining per version"
    versions = [_tags(r)["specforge/trigger_data_version"] for r in new]
    tok_versions = [m["version"] for m in _materializations(dagster, TOK_KEY)]
    assert versions[0] != versions[1] and versions[1] == tok_versions[0] and versions[0] in tok_versions
    drafts = {m["runId"]: m for m in _md_materializations(dagster, DRAFT_KEY)}
    evals = {m["runId"]: m for m in _md_materializations(dagster, EVAL_KEY)}
    for run, version in zip(new, versions):
        draft, ev = drafts[run["runId"]], evals[run["runId"]]
        # each draft trained on the version its run was requested for
        assert draft["md"]["trained_on_dataset_version"] == version
        draft_in = inputs_by_asset(draft["md"]["lineage/input_versions"])
        assert draft_in["tokenized/dataset"]["data_version"] == version
        # its evaluation (same run) used exactly the draft's inputs and that draft
        assert ev["md"]["draft_version"] == draft["version"]
        ev_in = inputs_by_asset(ev["md"]["lineage/input_versions"])
        for k in ("mix/training_mix", "tokenized/dataset", "tokenized/vocab_mapping", "models/target_model"):
            assert ev_in[k]["data_version"] == draft_in[k]["data_version"], k
    # (the two drafts may share a data version: it is the hash of the weights, and 10 tiny steps on
    # two datasets that differ by 3 rows can sample the same rows and produce identical weights)

    page.goto(f"/runs/{new[1]['runId']}")
    page.get_by_text("retrain_on_new_dataset").first.wait_for()
    page.get_by_text("Success").first.wait_for()


# -- a cancelled retraining, visibly untrained, requested again ---------------------------------

UNTRAINED_CHECK = "draft_matches_latest_dataset"


def _set_training(dagster, **training) -> str:
    """Override `training:` keys in the server's train.yaml (read by each run); returns the old text."""
    path = dagster.config_dir / "train.yaml"
    old = path.read_text()
    path.write_text(yaml.safe_dump(_deep_merge(yaml.safe_load(old), {"training": training}), sort_keys=False))
    return old


def _run_messages(dagster, run_id: str) -> list[str]:
    q = """query($id: ID!) { logsForRun(runId: $id, limit: 5000) { __typename ... on EventConnection {
             events { __typename ... on MessageEvent { message } } } } }"""
    res = dagster.gql(q, id=run_id)["logsForRun"]
    return [e.get("message") or "" for e in res.get("events", [])]


def _run_status(dagster, run_id: str) -> dict:
    q = "query($id: ID!) { runOrError(runId: $id) { ... on Run { runId status tags { key value } } } }"
    return dagster.gql(q, id=run_id)["runOrError"]


def _training_processes(root: Path) -> list[str]:
    """Command lines of live processes training from this server's data root (torchrun + ranks)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmd and "launch.json" in cmd:
            out.append(cmd)
    return out


def _check_executions(dagster, path: list[str], name: str, limit: int = 5) -> list[dict]:
    """Newest first: {runId, status, description, md: {label: text}} of an asset check."""
    q = """query($k: AssetKeyInput!, $c: String!, $n: Int!) { assetCheckExecutions(assetKey: $k, checkName: $c, limit: $n) {
             runId status evaluation { success description metadataEntries { label
               ... on TextMetadataEntry { text } } } } }"""
    out = []
    for e in dagster.gql(q, k={"path": path}, c=name, n=limit)["assetCheckExecutions"]:
        ev = e["evaluation"] or {}
        out.append(
            {
                "runId": e["runId"],
                "status": e["status"],
                "description": ev.get("description") or "",
                "md": {m["label"]: m.get("text") for m in ev.get("metadataEntries", [])},
            }
        )
    return out


def test_5_cancelled_retraining_is_visibly_untrained_and_requested_again_from_the_ui(page, dagster, materialized):
    known = {r["runId"] for r in _runs(dagster, job=RETRAIN_JOB)}
    # a training long enough to be cancelled while it runs (each run reads train.yaml when it starts)
    original_train = _set_training(dagster, max_steps=100_000, log_every=5, save_every=50)
    try:
        _write_rows(
            dagster.files / "alpha.jsonl",
            ROWS[:40]
            + [
                {
                    "id": "row-cancel",
                    "conversations": [
                        {"role": "user", "content": "Which retraining was cancelled?"},
                        {"role": "assistant", "content": "The one for this version of alpha; it is requested again."},
                    ],
                }
            ],
        )
        source_run = _materialize_partition_from_ui(page, "alpha")
        _wait_run(dagster, source_run)
        run = dagster.wait(
            lambda: _new_retraining_runs(dagster, known),
            RUN_TIMEOUT,
            "the retraining run for the changed alpha",
            interval=3,
        )[0]
        run_id, version = run["runId"], _tags(run)["specforge/trigger_data_version"]
        # the automation run that rebuilt the mix names the run and partition version that triggered it
        regen = [m for m in _materializations(dagster, REGEN_KEY, limit=20) if m["partition"] == "alpha"][0]
        mix_run = _run_status(dagster, _materializations(dagster, MIX_KEY, limit=1)[0]["runId"])
        assert _tags(mix_run)["specforge/triggered_by_run"] == regen["runId"], _tags(mix_run)
        assert f"regenerated/conversations[alpha]@{regen['version'][:12]}" in _tags(mix_run)["specforge/trigger_inputs"]
        assert _tags(run)["specforge/triggered_by_run"] == mix_run["runId"]
        # training is under way: its progress lines (step n/100000 ... ETA) are in the run log
        dagster.wait(
            lambda: any("ETA" in m and "/100000" in m for m in _run_messages(dagster, run_id)),
            RUN_TIMEOUT,
            "the retraining run to log training progress",
            interval=3,
        )
        assert _training_processes(dagster.data_root), "no training process found while the run trains"

        # the user cancels it: run page → Terminate → confirm "Terminate 1 run" (not "Force termination":
        # the run can be terminated, so the request reaches the run process and its torchrun)
        page.goto(f"/runs/{run_id}")
        page.get_by_role("button", name=re.compile(r"(^|\s)Terminate$")).click()
        dialog = page.get_by_role("dialog").filter(has_text="Terminate runs")
        with page.expect_response(_graphql_response("terminateRuns")) as resp:
            dialog.get_by_role("button", name="Terminate 1 run", exact=True).click()
        results = resp.value.json()["data"]["terminateRuns"]["terminateRunResults"]
        assert [r["__typename"] for r in results] == ["TerminateRunSuccess"], results
        dialog.get_by_role("button", name="Done").click()
    finally:
        (dagster.config_dir / "train.yaml").write_text(original_train)

    status = dagster.wait(
        lambda: (s := _run_status(dagster, run_id)["status"]) in TERMINAL and s, 180, f"run {run_id} to stop"
    )
    assert status == "CANCELED", status
    dagster.wait(lambda: not _training_processes(dagster.data_root), 120, "the training processes to exit")
    page.get_by_text("Canceled").first.wait_for()

    # the version is visibly untrained: the check on models/draft_model failed, naming it and the run
    untrained = dagster.wait(
        lambda: [
            e
            for e in _check_executions(dagster, DRAFT_KEY, UNTRAINED_CHECK)[:1]
            if e["status"] == "FAILED" and e["md"].get("latest_dataset_version") == version
        ],
        120,
        f"{UNTRAINED_CHECK} to fail for the cancelled version",
        interval=3,
    )[0]
    assert run_id[:8] in untrained["description"] and "canceled" in untrained["description"], untrained
    assert _materializations(dagster, DRAFT_KEY, limit=1)[0]["runId"] != run_id
    assert _latest_version(dagster, TOK_KEY) == version
    page.goto("/assets/" + "/".join(DRAFT_KEY) + "?view=checks")
    page.get_by_text(UNTRAINED_CHECK).first.wait_for()
    page.get_by_text("Failed").first.wait_for()
    if os.environ.get("SPECFORGE_E2E_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / "untrained-check.png"))
    # and the sensor does not start it again by itself
    _settle(dagster)
    assert [r["runId"] for r in _new_retraining_runs(dagster, known)] == [run_id]

    # requested again the README's way: Runs → the cancelled run → Re-execute ▾ → From failure
    page.goto(f"/runs/{run_id}")
    page.get_by_text("Canceled").first.wait_for()
    page.get_by_role("button", name="arrow_drop_down").click()
    with page.expect_response(_graphql_response("LaunchPipelineReexecution")) as resp:
        page.get_by_role("menuitem", name=re.compile(r"(^|\s)From failure$")).click()
    again = resp.value.json()["data"]["launchPipelineReexecution"]["run"]["id"]
    done = _wait_run(dagster, again)
    assert _tags(done)["specforge/trigger_data_version"] == version
    assert _tags(done)["dagster/parent_run_id"] == run_id
    # it trained exactly the cancelled version, and the check passes again
    draft = _md_materializations(dagster, DRAFT_KEY, limit=1)[0]
    assert draft["runId"] == again
    assert draft["md"]["trained_on_dataset_version"] == version
    assert inputs_by_asset(draft["md"]["lineage/input_versions"])["tokenized/dataset"]["data_version"] == version
    ev = _md_materializations(dagster, EVAL_KEY, limit=1)[0]
    assert ev["runId"] == again and ev["md"]["draft_version"] == draft["version"]
    dagster.wait(
        lambda: [e for e in _check_executions(dagster, DRAFT_KEY, UNTRAINED_CHECK)[:1] if e["status"] == "SUCCEEDED"],
        120,
        f"{UNTRAINED_CHECK} to pass again",
        interval=3,
    )
    page.goto(f"/runs/{again}")
    page.get_by_text("Success").first.wait_for()
