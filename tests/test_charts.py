"""specforge_assets.charts: every picture decodes, axes fit the data, zero series stay visible,
tables hold the right rows, inline pictures fit the UI's inline-markdown limit."""

from __future__ import annotations

import base64
import io
import json

import pytest

from specforge_assets import charts

PIL = pytest.importorskip("PIL.Image")


def _size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    im = PIL.open(io.BytesIO(png))
    im.load()
    return im.size


def _mix_report() -> dict:
    return {
        "sources": ["chat", "code", "empty"],
        "per_source": {
            "chat": {"train_rows": 90, "test_rows": 10, "train_chars": 120_000},
            "code": {"train_rows": 45, "test_rows": 5, "train_chars": 300_000},
            "empty": {"train_rows": 0, "test_rows": 0, "train_chars": 0},
        },
        "shares": {
            "chat": {"target": 0.5, "realized": 0.667},
            "code": {"target": 0.5, "realized": 0.333},
            "empty": {"target": 0.0, "realized": 0.0},
        },
    }


def _eval_report() -> dict:
    return {
        "acceptance_length": 2.1,
        "untrained_acceptance_length": 1.02,
        "k": 3,
        "per_position_acceptance": [0.7, 0.4, 0.0],
        "untrained_per_position_acceptance": [0.02, 0.0, 0.0],
        "previous": {"acceptance_length": 1.9, "per_position_acceptance": [0.6, 0.3, 0.1]},
        "per_category": {
            "code": {"n": 2, "acceptance_length": 2.5, "untrained_acceptance_length": 1.0},
            "chat": {"n": 5, "acceptance_length": 1.75, "untrained_acceptance_length": 1.05},
            "math": {"n": 2, "acceptance_length": 3.0, "untrained_acceptance_length": 1.0},
        },
    }


# -- length histogram ---------------------------------------------------------------------------


def test_histogram_x_axis_fits_the_data_not_max_length():
    lengths = [12, 40, 77, 120, 187, 150, 33]
    fig = charts.length_histogram_figure(lengths, max_length=2048)
    ax = fig.axes[0]
    assert ax.get_xlim() == (0, 200)  # 187 rounded up, not 2048
    assert not ax.get_legend()  # max_length (off scale) is not drawn...
    assert "max_length 2048 off scale" in ax.get_title()  # ...but named
    assert sum(p.get_height() for p in ax.patches) == len(lengths)
    assert _size(charts.figure_png(fig)) == (480, 240)


def test_histogram_marks_max_length_inside_the_view():
    fig = charts.length_histogram_figure([100, 480, 512, 512], max_length=512)
    ax = fig.axes[0]
    assert ax.get_xlim() == (0, 1000)
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [512]
    assert "max_length=512" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_histogram_png_and_empty_input():
    assert _size(charts.length_histogram_png([5, 9], 2048))[0] > 100
    ax = charts.length_histogram_figure([], 64).axes[0]
    assert "no rows" in [t.get_text() for t in ax.texts]


@pytest.mark.parametrize("x,want", [(187, 200), (1, 1), (2048, 2500), (0.37, 0.5), (5000, 5000), (0, 1), (7, 10)])
def test_nice_ceil(x, want):
    assert charts.nice_ceil(x) == want


def test_tokenize_report_writes_the_fitted_histogram(tmp_path):
    from specforge_assets.tokenize.report import length_histogram_png

    p = length_histogram_png([10, 20, 30], 2048, tmp_path / "lengths.png")
    assert _size(p.read_bytes())[0] > 100
    md = charts.png_markdown(p, "tokens per row")
    assert md.startswith("![tokens per row](data:image/png;base64,")
    assert base64.b64decode(md.split(",", 1)[1][:-1]) == p.read_bytes()


# -- bar charts / mix ---------------------------------------------------------------------------


def test_zero_series_is_still_visible():
    fig = charts.bar_chart_figure(["a", "b"], {"rows": [10, 0], "all zero": [0, 0]})
    rows_ax, zero_ax = fig.axes
    assert all(p.get_height() > 0 for p in rows_ax.patches + zero_ax.patches)  # hairline bars
    assert [t.get_text() for t in rows_ax.texts] == ["10", "0"]  # value labels, 0 included
    assert [t.get_text() for t in zero_ax.texts] == ["0", "0"]
    assert zero_ax.get_ylim()[1] > 0
    assert rows_ax.patches[1].get_edgecolor()[:3] == (0.0, 0.0, 0.0)  # outlined


def test_mix_chart_and_table():
    rep = _mix_report()
    assert _size(charts.mix_chart_png(rep)) == (720, 256)
    rows, cols = charts.mix_table(rep)
    assert [c[0] for c in cols] == list(rows[0])
    assert rows[0] == {
        "source": "chat",
        "rows": 100,
        "train_rows": 90,
        "test_rows": 10,
        "train_chars": 120000,
        "share": 0.6667,
        "target_share": 0.5,
    }
    assert rows[2]["rows"] == 0 and rows[2]["share"] == 0.0
    md = charts.mix_inline_md(rep)
    assert md is not None and len(md) < charts.INLINE_MD_LIMIT
    svg = base64.b64decode(md.split(",", 1)[1][:-1]).decode()
    assert "empty 0" in svg and "v-1h" in svg  # the zero source: labelled, 1 px bar


# -- loss curve ---------------------------------------------------------------------------------


def _history(n=12, k=3):
    return [
        {
            "step": 5 * (i + 1),
            "loss": 3.0 / (i + 1),
            "acc": [min(1.0, 0.1 * i + 0.05 * j) for j in range(k)],
            "lr": 1e-4,
            "tokens_per_s": 100.0,
        }
        for i in range(n)
    ]


def test_loss_curve_from_metrics_json_and_jsonl(tmp_path):
    hist = _history()
    (tmp_path / "metrics.json").write_text(json.dumps({"final": hist[-1], "history": hist}))
    st = tmp_path / "training_state"
    st.mkdir()
    (st / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist[:4]))
    assert charts.load_metrics(tmp_path) == hist
    assert charts.load_metrics(st / "metrics.jsonl") == hist[:4]
    assert charts.load_metrics(tmp_path / "nothing") == []
    fig = charts.loss_curve_figure({"final": hist[-1], "history": hist})
    loss_ax, acc_ax = fig.axes
    x, y = loss_ax.get_lines()[0].get_data()
    assert list(x) == [h["step"] for h in hist] and list(y) == [h["loss"] for h in hist]
    assert len(acc_ax.get_lines()) == 3 and acc_ax.get_ylim() == (0, 1.02)
    assert _size(charts.loss_curve_png(hist))[0] == 720
    md = charts.loss_curve_inline_md(hist)
    assert md is not None and len(md) < charts.INLINE_MD_LIMIT


def test_loss_curve_without_acc_and_with_only_a_final_entry():
    fig = charts.loss_curve_figure({"final": {"step": 3, "loss": 1.5}, "history": []})
    assert len(fig.axes) == 1 and list(fig.axes[0].get_lines()[0].get_ydata()) == [1.5]
    assert charts.loss_curve_inline_md([]) is None
    # a long run is downsampled to fit inline
    assert len(charts.loss_curve_inline_md(_history(n=5000))) < charts.INLINE_MD_LIMIT


# -- acceptance ---------------------------------------------------------------------------------


def test_acceptance_per_position_png_and_zero_bars():
    rep = _eval_report()
    w, h = _size(charts.acceptance_per_position_png(rep))
    assert (w, h) == (605, 374)
    fig = charts.acceptance_per_position_figure(charts.acceptance_series(rep), 3, "t")
    ax = fig.axes[0]
    assert len(ax.patches) == 9 and all(p.get_height() > 0 for p in ax.patches)
    assert "0.00" in [t.get_text() for t in ax.texts]
    md = charts.acceptance_inline_md(rep)
    assert md is not None and len(md) < charts.INLINE_MD_LIMIT


def test_per_position_table():
    rows, cols = charts.per_position_table(_eval_report())
    assert [c[0] for c in cols] == ["position", "trained", "untrained", "previous"]
    assert rows[0] == {"position": 1, "trained": 0.7, "untrained": 0.02, "previous": 0.6}
    assert len(rows) == 3
    rep = _eval_report()
    rep["previous"] = None
    rows, cols = charts.per_position_table(rep)
    assert [c[0] for c in cols] == ["position", "trained", "untrained"] and "previous" not in rows[0]


def test_per_category_table_rows():
    rows, cols = charts.per_category_table(_eval_report())
    assert [c[0] for c in cols] == [
        "category",
        "n_prompts",
        "acceptance_length",
        "untrained_acceptance_length",
        "improvement",
    ]
    assert rows == [
        {
            "category": "chat",
            "n_prompts": 5,
            "acceptance_length": 1.75,
            "untrained_acceptance_length": 1.05,
            "improvement": 0.7,
        },
        {
            "category": "code",
            "n_prompts": 2,
            "acceptance_length": 2.5,
            "untrained_acceptance_length": 1.0,
            "improvement": 1.5,
        },
        {
            "category": "math",
            "n_prompts": 2,
            "acceptance_length": 3.0,
            "untrained_acceptance_length": 1.0,
            "improvement": 2.0,
        },
    ]
    assert charts.per_category_table({})[0] == []


def test_table_rows_are_dagster_table_records():
    import dagster as dg

    rows, cols = charts.per_category_table(_eval_report())
    v = dg.MetadataValue.table(
        records=[dg.TableRecord(r) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t, description=d) for n, t, d in cols]),
    )
    assert len(v.records) == 3
    rows, cols = charts.mix_table(_mix_report())
    dg.MetadataValue.table(
        records=[dg.TableRecord(r) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t, description=d) for n, t, d in cols]),
    )


# -- inline svg ---------------------------------------------------------------------------------


def test_inline_markdown_respects_the_ui_limit():
    assert charts.svg_markdown("<svg/>" * 400, "x") is None
    many = [f"source_{i}" for i in range(16)]
    md = charts.bars_inline_md(list(range(16)), many, "rows", "rows")  # labels dropped to fit
    assert md is not None and len(md) < charts.INLINE_MD_LIMIT
    assert "source_" not in base64.b64decode(md.split(",", 1)[1][:-1]).decode()
    assert charts.length_histogram_inline_md([1, 5, 90, 187], 2048) is not None
    assert charts.bars_inline_md(list(range(200)), None, "rows", "rows") is None  # PNG only then


def test_charts_module_does_not_import_dagster():
    src = open(charts.__file__).read()
    assert "import dagster" not in src and "from dagster" not in src


def test_mix_chart_drop_in_writes_the_png(tmp_path):
    from specforge_assets.mix.chart import bar_chart_png

    p = bar_chart_png(_mix_report(), tmp_path / "sub" / "mix.png")
    assert _size(p.read_bytes()) == (720, 256)


def test_metrics_table_thins_the_history_and_keeps_the_last_step():
    history = [{"step": i, "loss": 1.0 / i, "acc": [0.5, 0.25], "lr": 1e-4, "tokens_per_s": 99.6} for i in range(1, 50)]
    rows, columns = charts.metrics_table(history, max_rows=20)
    assert [c[0] for c in columns] == ["step", "loss", "acc0", "acc1", "lr", "tokens_per_s"]
    assert [r["step"] for r in rows] == list(range(1, 50, 2))  # every 2nd step (49 // 20), the last one included
    assert rows[-1] == {"step": 49, "loss": 0.0204, "acc0": 0.5, "acc1": 0.25, "lr": 1e-4, "tokens_per_s": 100}
    assert charts.metrics_table([]) == ([], [c for c in columns if not c[0].startswith("acc")])


def test_code_block_text_cannot_be_closed_by_its_text():
    text = "a ``` b\n````"
    block = charts.code_block_text(text, "text")
    fence = block.split("\n", 1)[0].removesuffix("text")
    assert fence == "`" * 5 and block == f"{fence}text\n{text}\n{fence}"  # the text is kept verbatim
