import pytest

from core.files import atomic_output, atomic_write_bytes, atomic_write_text


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_bytes(path, b"two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.npy"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(path, suffix=".npy") as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_written_files_and_temp_dirs_are_readable_by_others(tmp_path):
    from core.files import make_temp_dir

    atomic_write_text(tmp_path / "model.json", "{}")
    assert (tmp_path / "model.json").stat().st_mode & 0o777 == 0o644
    assert make_temp_dir(tmp_path, ".stage.").stat().st_mode & 0o777 == 0o755
