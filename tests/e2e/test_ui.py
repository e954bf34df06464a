"""The platform in a real browser: lineage, a partition from its asset page, a file dropped into
the incoming folder, a backfill of every source partition followed by one mix/tokenize run, and
the retraining run that follows. The tests share one `dagster dev` and run in file order; each
asserts the final state over GraphQL, then once more in the UI.

Run: pytest -m browser tests/e2e  (skips without /usr/bin/chromium). SPECFORGE_E2E_SCREENSHOTS=1
also refreshes docs/img/*.png.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
DOCS_IMG = REPO / "docs" / "img"
SOURCES_KEY = ["sources", "conversations"]
REGEN_KEY = ["regenerated", "conversations"]
MIX_KEY = ["mix", "training_mix"]
TOK_KEY = ["tokenized", "dataset"]
DRAFT_KEY = ["models", "draft_model"]
EVAL_KEY = ["models", "draft_evaluation"]
TARGET_KEY = ["models", "target_model"]
CONFIGURED = ["sample-custom", "sample-late", "sample-sharegpt", "sample-ultrachat"]
LATE = "sample-late"  # configured with a file that appears only after the first backfill
DROPPED = "dropped-chat"
RUN_TIMEOUT = 240
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def _doc_screenshot(page, name: str) -> None:
    if os.environ.get("SPECFORGE_E2E_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / name))


def _graphql_response(op: str):
    return lambda r: "/graphql" in r.url and r.request.method == "POST" and op in (r.request.post_data or "")


def _wait_run(dagster, run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
    def done():
        q = "query($id: ID!) { runOrError(runId: $id) { ... on Run { runId status tags { key value } } } }"
        run = dagster.gql(q, id=run_id)["runOrError"]
        return run if run.get("status") in TERMINAL else None

    run = dagster.wait(done, timeout, f"run {run_id} to finish")
    assert run["status"] == "SUCCESS", f"run {run_id} ended {run['status']}\n{dagster.log_tail()}"
    return run


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["tags"]}


def _asset_edges(dagster) -> set[tuple[str, str]]:
    q = "{ assetNodes { assetKey { path } dependencyKeys { path } isExecutable } }"
    nodes = dagster.gql(q)["assetNodes"]
    return {("/".join(d["path"]), "/".join(n["assetKey"]["path"])) for n in nodes for d in n["dependencyKeys"]}


def _ui_graph(page) -> tuple[dict, list]:
    """Asset nodes as {group/name: box} and edges as (start, end) points, read from the SVG."""
    return page.evaluate(
        """() => {
          const boxes = Array.from(document.querySelectorAll('svg foreignObject')).map(n => ({
            text: (n.textContent || '').trim(), x: +n.getAttribute('x'), y: +n.getAttribute('y'),
            w: +n.getAttribute('width'), h: +n.getAttribute('height')}));
          const edges = Array.from(document.querySelectorAll('svg path[marker-end^="url(#arrow"]')).map(p => {
            const nums = (p.getAttribute('d') || '').match(/-?[0-9.]+/g).map(Number);
            return [nums[0], nums[1], nums[nums.length - 2], nums[nums.length - 1]];
          });
          return [boxes, edges];
        }"""
    )


def _shown_as(display: str, name: str) -> bool:
    """The graph shortens long names with an ellipsis (`target_hid…_states`)."""
    if display == name:
        return True
    head, sep, tail = display.partition("…")
    return bool(sep) and name.startswith(head) and name.endswith(tail)


GROUP_KEY_PREFIX = {"target": "models"}  # group name → asset key prefix where they differ


def _edges_from_svg(boxes: list, raw_edges: list, groups: set[str], keys: set[str]) -> set[tuple[str, str]]:
    group_boxes = [b for b in boxes if b["text"] in groups and b["w"] > 320]
    nodes = {}
    for b in boxes:
        if b in group_boxes or not b["text"]:
            continue
        shown = re.split(r"\s", b["text"])[0]
        for g in group_boxes:
            if g["x"] <= b["x"] and b["x"] + b["w"] <= g["x"] + g["w"] and g["y"] <= b["y"] <= g["y"] + g["h"]:
                prefix = GROUP_KEY_PREFIX.get(g["text"], g["text"])
                match = [k for k in keys if k.startswith(prefix + "/") and _shown_as(shown, k.split("/", 1)[1])]
                if len(match) == 1:
                    nodes[match[0]] = b
    edges = set()
    for sx, sy, ex, ey in raw_edges:
        src = [k for k, b in nodes.items() if abs(b["x"] + b["w"] - sx) < 2 and b["y"] <= sy <= b["y"] + b["h"]]
        dst = [k for k, b in nodes.items() if 0 <= b["x"] - ex < 14 and b["y"] <= ey <= b["y"] + b["h"]]
        if len(src) == 1 and len(dst) == 1:
            edges.add((src[0], dst[0]))
    return edges


# ----------------------------------------------------------------------------------------------


def test_a_asset_graph_shows_every_layer_and_edge(page, dagster):
    expected = _asset_edges(dagster)
    keys = {k for e in expected for k in e}
    layers = {"sources", "regenerated", "mix", "tokenized", "models"}
    assert {a.split("/")[0] for e in expected for a in e} >= layers
    groups = layers | {"target"}  # models/target_model has a group of its own (no cycle between groups)
    page.goto("/asset-groups")
    page.get_by_text("Global asset lineage").first.wait_for()
    for g in sorted(groups):
        page.get_by_role("button", name=re.compile(rf"asset_group {g}")).first.wait_for()
    page.locator("svg foreignObject").first.wait_for(state="attached")
    page.keyboard.press("Alt+e")  # expand all groups (the graph opens with groups collapsed)

    def ui_edges():
        boxes, raw = _ui_graph(page)
        got = _edges_from_svg(boxes, raw, groups, keys)
        return got if got == expected else None

    try:
        dagster.wait(ui_edges, 30, "the lineage graph to show every edge", interval=1)
    except AssertionError:
        boxes, raw = _ui_graph(page)
        missing = expected - _edges_from_svg(boxes, raw, groups, keys)
        raise AssertionError(f"edges missing in the UI graph: {sorted(missing)}") from None


def test_b_materialize_target_and_one_source_partition(page, dagster):
    # the configured sources are partitions already (register_sources_sensor), nothing was run
    dagster.wait(lambda: set(CONFIGURED) <= set(dagster.partitions()), 90, "configured partitions")

    # unpartitioned asset: one click
    page.goto("/assets/" + "/".join(TARGET_KEY))
    with page.expect_response(_graphql_response("LaunchPipelineExecution")) as resp:
        page.get_by_role("button", name=re.compile(r"(^|\s)Materialize$")).click()
    target_run = resp.value.json()["data"]["launchPipelineExecution"]["run"]["id"]

    # one partition from the partitioned asset's dialog
    page.goto("/assets/" + "/".join(SOURCES_KEY))
    page.get_by_role("button", name=re.compile(r"Materialize…$")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem", name=re.compile(r"^sample-ultrachat")).click()
    page.keyboard.press("Escape")  # close the menu, not the dialog
    dialog.get_by_text("1 partition").first.wait_for()
    launch = dialog.get_by_role("button", name="Launch 1 run")
    with page.expect_response(_graphql_response("LaunchPipelineExecution")) as resp:
        launch.click()
    run_id = resp.value.json()["data"]["launchPipelineExecution"]["run"]["id"]
    run = _wait_run(dagster, run_id)
    assert _tags(run)["dagster/partition"] == "sample-ultrachat"
    assert "sample-ultrachat" in dagster.materialized_partitions(SOURCES_KEY)
    _wait_run(dagster, target_run, timeout=400)

    page.goto(f"/runs/{run_id}")
    page.get_by_text("Success").first.wait_for()


def _rows(prefix: str, n: int = 12) -> list[dict]:
    return [
        {
            "id": f"{prefix}-{i}",
            "conversations": [
                {"role": "user", "content": f"{prefix}: what is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
            ],
        }
        for i in range(n)
    ]


def _wait_backfill(dagster, backfill_id: str) -> str:
    q = "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"
    return dagster.wait(
        lambda: (s := dagster.gql(q, id=backfill_id)["partitionBackfillOrError"]["status"]) not in {"REQUESTED"} and s,
        300,
        f"backfill {backfill_id}",
    )


def _partition_statuses(runs: list[dict]) -> dict[str, str]:
    return {_tags(r)["dagster/partition"]: r["status"] for r in runs if "dagster/partition" in _tags(r)}


def test_d_dropped_file_becomes_a_partition(page, dagster):
    rows = _rows("drop")
    incoming = dagster.data_root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / f".{DROPPED}.jsonl.part"  # hidden while being written; the rename is atomic
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.rename(incoming / f"{DROPPED}.jsonl")

    dagster.wait(lambda: DROPPED in dagster.partitions(), 120, "the sensor to add the partition")
    runs = dagster.wait(
        lambda: dagster.runs({"dagster/sensor_name": "incoming_files_sensor", "dagster/partition": DROPPED}),
        120,
        "the sensor's run",
    )
    run = _wait_run(dagster, runs[0]["runId"])
    assert _tags(run)["specforge/incoming_file"] == f"{DROPPED}.jsonl"
    assert DROPPED in dagster.materialized_partitions(SOURCES_KEY)
    assert DROPPED in dagster.materialized_partitions(REGEN_KEY)

    page.goto("/assets/" + "/".join(SOURCES_KEY) + "?view=partitions")
    page.get_by_text(DROPPED).first.wait_for()
    page.goto(f"/runs/{run['runId']}")
    page.get_by_text("incoming_files_sensor").first.wait_for()


def test_c_backfill_all_source_partitions_then_one_mix(page, dagster):
    page.goto("/assets/" + "/".join(SOURCES_KEY))
    page.get_by_role("button", name=re.compile(r"Materialize…$")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_role("button", name="All", exact=True).click()
    all_partitions = dagster.partitions()
    dialog.get_by_text(f"{len(all_partitions)} partitions").first.wait_for()
    launch = dialog.get_by_role("button", name="Launch backfill")
    with page.expect_response(_graphql_response("LaunchPartitionBackfill")) as resp:
        launch.click()
    backfill_id = resp.value.json()["data"]["launchPartitionBackfill"]["backfillId"]

    # every partition ran (in parallel up to the dagster/backfill limit); sample-late failed
    assert _wait_backfill(dagster, backfill_id) == "COMPLETED_FAILED"
    statuses = _partition_statuses(dagster.runs({"dagster/backfill": backfill_id}))
    assert sorted(statuses) == all_partitions
    assert {k for k, v in statuses.items() if v != "SUCCESS"} == {LATE}, statuses
    page.goto(f"/runs/b/{backfill_id}")
    page.get_by_text("Failed").first.wait_for()
    page.get_by_text("sources / conversations").first.wait_for()
    _doc_screenshot(page, "backfill.png")

    # the failure is on record, readable
    failures = dagster.data_root / "ops" / "failures.jsonl"
    records = dagster.wait(
        lambda: (
            [r for r in map(json.loads, failures.read_text().splitlines()) if r["partition"] == LATE]
            if failures.exists()
            else None
        ),
        60,
        "the failure record",
    )
    assert "late" in json.dumps(records[0]["steps"]), records[0]
    # a source that never materialized holds the mix back
    assert not dagster.materializations(MIX_KEY)

    # fix the input, re-execute the failed partition from the backfill's menu: only it runs
    late = dagster.data_root / "late" / "conversations.jsonl"
    late.parent.mkdir(parents=True, exist_ok=True)
    late.write_text("".join(json.dumps(r) + "\n" for r in _rows("late")))
    page.get_by_role("button", name="expand_more").last.click()
    with page.expect_response(_graphql_response("reexecutePartitionBackfill")) as resp:
        page.get_by_role("menuitem", name=re.compile(r"Re-execute from failure")).click()
    retry_id = resp.value.json()["data"]["reexecutePartitionBackfill"]["backfillId"]
    assert _wait_backfill(dagster, retry_id) == "COMPLETED_SUCCESS"
    assert _partition_statuses(dagster.runs({"dagster/backfill": retry_id})) == {LATE: "SUCCESS"}
    assert dagster.materialized_partitions(SOURCES_KEY) == all_partitions
    page.goto(f"/runs/b/{retry_id}")
    page.get_by_text("Succeeded").first.wait_for()
    page.goto("/assets/" + "/".join(SOURCES_KEY) + "?view=partitions")
    page.get_by_text(f"Materialized ({len(all_partitions)})").first.wait_for()
    _doc_screenshot(page, "partitions.png")

    # regenerated follows each partition, then the mix (+ tokenize) runs once
    dagster.wait(lambda: dagster.materializations(MIX_KEY), 300, "the mix after the backfill")
    mixes = dagster.materializations(MIX_KEY)
    assert len(mixes) == 1, f"mix materialized {len(mixes)} times"
    mix_run = _wait_run(dagster, mixes[0]["runId"])
    assert _tags(mix_run).get("specforge/trigger") == "automation"
    assert sorted(dagster.materialized_partitions(REGEN_KEY)) == all_partitions
    assert dagster.materializations(TOK_KEY), "tokenized/dataset ran with the mix"


def test_e_retraining_follows_the_new_tokenized_dataset(page, dagster):
    runs = dagster.wait(
        lambda: dagster.runs({"dagster/sensor_name": "retrain_on_new_dataset"}), 240, "the retraining run"
    )
    run = _wait_run(dagster, runs[-1]["runId"], timeout=400)
    tags = _tags(run)
    tok = dagster.materializations(TOK_KEY)[0]
    tok_version = {t["key"]: t["value"] for t in tok["tags"]}["dagster/data_version"]
    assert tags["specforge/trigger_data_version"] == tok_version
    assert tags["specforge/trigger_run_id"] == tok["runId"]
    assert dagster.materializations(DRAFT_KEY) and dagster.materializations(EVAL_KEY)
    assert len(runs) == 1, "one retraining run per tokenized data version"

    page.goto(f"/runs/{run['runId']}")
    page.get_by_text("retrain_on_new_dataset").first.wait_for()
    page.get_by_role("button", name=re.compile(r"View tags and config")).click()
    page.get_by_role("dialog").get_by_text(re.compile(re.escape(tok_version[:12]))).first.wait_for()
    _doc_screenshot(page, "retrain-run.png")

    # the whole graph, materialized, for the README
    page.goto("/asset-groups")
    page.get_by_text("Global asset lineage").first.wait_for()
    page.locator("svg foreignObject").first.wait_for(state="attached")
    page.keyboard.press("Alt+e")
    page.get_by_text("draft_evaluation").first.wait_for(state="attached")
    time.sleep(2)  # layout settles (web worker); only for the picture
    _doc_screenshot(page, "asset-graph.png")
