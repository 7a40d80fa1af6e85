import os

import numpy as np
import pytest

from core.labels import (
    LabelFormatError,
    read_label_dir,
    read_label_file,
    write_label_file,
)


def write_text(path, text: str, newline: str = "\n"):
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def test_reads_commas_spaces_crlf_blank_lines_and_bom(tmp_path):
    text = "\ufeff12,1043,1187,0.83\n\n  3, 0, 10.5, 1  \n7 5 9 0.25\n   \n"
    path = write_text(tmp_path / "v.txt", text, newline="\r\n")
    rows = read_label_file(path)
    assert rows.dtype == np.float64
    np.testing.assert_array_equal(rows, [[12, 1043, 1187, 0.83], [3, 0, 10.5, 1], [7, 5, 9, 0.25]])


def test_three_columns_get_confidence_one_unless_confidence_is_needed(tmp_path):
    path = write_text(tmp_path / "v.txt", "1,0,10\n2,20,30,0.5\n")
    np.testing.assert_array_equal(read_label_file(path), [[1, 0, 10, 1.0], [2, 20, 30, 0.5]])
    with pytest.raises(LabelFormatError, match=r"v\.txt:1: expected 4 fields") as e:
        read_label_file(path, need_confidence=True)
    assert e.value.line == 1


def test_empty_file_is_zero_rows(tmp_path):
    assert read_label_file(write_text(tmp_path / "v.txt", "")).shape == (0, 4)
    assert read_label_file(write_text(tmp_path / "w.txt", "\n \n")).shape == (0, 4)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1,0,x,0.5", "expected numbers"),
        ("1,,10,0.5", "expected numbers"),
        ("1,0,10,0.5,", "expected numbers"),
        ("1,0,10,0.5,7", "got 5"),
        ("1,0", "got 2"),
        ("0,0,10,0.5", "label must be an integer >= 1"),
        ("1.5,0,10,0.5", "label must be an integer >= 1"),
        ("1,10,5,0.5", "end is before start"),
        ("1,0,10,nan", "finite"),
        ("1,0,inf,0.5", "finite"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, reason):
    path = write_text(tmp_path / "video.txt", f"1,0,10,0.5\n\n{line}\n2,0,10,0.5\n")
    with pytest.raises(LabelFormatError) as e:
        read_label_file(path)
    assert isinstance(e.value, ValueError)
    assert str(e.value).startswith(f"{path}:3: ")
    assert reason in str(e.value)
    assert (e.value.path, e.value.line) == (str(path), 3)


def test_write_then_read_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.stack(
        [
            rng.integers(1, 52, 50),
            rng.integers(0, 10_000, 50),
            rng.integers(10_000, 20_000, 50) + rng.random(50) * (rng.random(50) < 0.3),
            rng.random(50),
        ],
        axis=1,
    )
    path = tmp_path / "v.txt"
    write_label_file(path, rows)
    np.testing.assert_array_equal(read_label_file(path), rows)
    assert path.read_text().splitlines()[0].count(",") == 3
    assert os.listdir(tmp_path) == ["v.txt"]  # no temporary file left behind


def test_write_three_columns_and_empty(tmp_path):
    write_label_file(tmp_path / "a.txt", [[4, 10, 20]])
    assert (tmp_path / "a.txt").read_text() == "4,10,20\n"
    write_label_file(tmp_path / "b.txt", [])
    assert read_label_file(tmp_path / "b.txt").shape == (0, 4)


def test_write_rejects_invalid_rows_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "v.txt"
    write_label_file(path, [[1, 0, 10, 0.5]])
    with pytest.raises(LabelFormatError, match="row 1: end is before start"):
        write_label_file(path, [[1, 0, 10, 0.5], [2, 10, 5, 0.5]])
    with pytest.raises(LabelFormatError, match=r"\[N, 3\] or \[N, 4\]"):
        write_label_file(path, [[1, 0]])
    assert path.read_text() == "1,0,10,0.5\n"
    assert os.listdir(tmp_path) == ["v.txt"]


def test_read_dir_keys_by_stem_sorted_and_skips_other_files(tmp_path):
    write_text(tmp_path / "b.txt", "2,0,10,0.5\n")
    write_text(tmp_path / "a.txt", "1,0,10,0.5\n")
    write_text(tmp_path / ".hidden.txt", "garbage\n")
    write_text(tmp_path / "notes.md", "garbage\n")
    (tmp_path / "sub.txt").mkdir()
    out = read_label_dir(tmp_path)
    assert list(out) == ["a", "b"]
    np.testing.assert_array_equal(out["b"], [[2, 0, 10, 0.5]])


def test_read_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        read_label_dir(tmp_path / "missing")
    file = write_text(tmp_path / "a.txt", "1,0,10,0.5\n")
    with pytest.raises(NotADirectoryError):
        read_label_dir(file)
    write_text(tmp_path / "b.txt", "1,0,10\n")
    with pytest.raises(LabelFormatError, match=r"b\.txt:1"):
        read_label_dir(tmp_path, need_confidence=True)
