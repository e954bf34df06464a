import pytest

from specforge_assets import paths
from specforge_assets.fileio import atomic_write


def test_definitions_load():
    from specforge_assets.definitions import defs

    assert "store" in defs.resources


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/abs", ".hidden", "", "a\\b"])
def test_unsafe_keys_rejected(bad, data_root):
    with pytest.raises(paths.UnsafeKeyError):
        paths.layer_dir("sources", bad)


def test_layer_dir_inside_root(data_root):
    assert paths.layer_dir("sources", "sample-ultrachat") == data_root / "sources" / "sample-ultrachat"


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path):
    """Outputs are shared between users like SpecForge's: 0666 & ~umask, not mkstemp's 0600."""
    import os
    import stat

    old = os.umask(0o022)
    os.umask(old)
    with atomic_write(tmp_path / "a.jsonl") as f:
        f.write("x\n")
    with open(tmp_path / "b.jsonl", "w") as f:
        f.write("x\n")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.jsonl").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.jsonl").st_mode) == 0o666 & ~old
    from specforge_assets.fileio import make_staging_dir

    staged = make_staging_dir(tmp_path, ".out.")  # folders built aside, then renamed into place
    (tmp_path / "plain").mkdir()
    assert stat.S_IMODE(os.stat(staged).st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


def test_yaml_is_parsed_safely(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("a: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        paths.load_yaml(bad)


def test_staged_dir_publishes_on_success_and_leaves_dst_on_error(tmp_path):
    from specforge_assets.fileio import staged_dir

    dst = tmp_path / "out"
    with staged_dir(dst) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (dst / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with staged_dir(dst) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert (dst / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
