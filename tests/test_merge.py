"""concat: sources (whole files or byte ranges) into one file, atomically."""

import hashlib
import os

import pytest

from batchledger import merge
from batchledger.errors import BatchledgerError
from batchledger.merge import concat


def test_concat_files_and_ranges_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(merge, "READ_BYTES", 1000)  # several reads per source
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a, b = os.urandom(5000), os.urandom(3333)
    first.write_bytes(a)
    second.write_bytes(b)
    target = tmp_path / "out" / "merged.jsonl"
    saved = concat(target, [first, (second, 10, 2500), second, (first, 4000, 4000), first])
    expected = a + b[10:2500] + b + a
    assert target.read_bytes() == expected
    assert saved.size == len(expected)
    assert saved.sha256 == hashlib.sha256(expected).hexdigest()
    assert sorted(p.name for p in target.parent.iterdir()) == ["merged.jsonl"]


def test_concat_of_nothing_is_an_empty_file(tmp_path):
    target = tmp_path / "merged.jsonl"
    assert concat(target, []).size == 0
    assert target.read_bytes() == b""


def test_a_source_that_fails_leaves_the_target_as_it_was(tmp_path):
    tmp_path = tmp_path / "here"
    tmp_path.mkdir()
    target = tmp_path / "merged.jsonl"
    target.write_bytes(b"complete\n")
    source = tmp_path / "a.jsonl"
    source.write_bytes(b"x" * 100)
    with pytest.raises(BatchledgerError, match="ended before byte 200"):
        concat(target, [source, (source, 50, 200)])
    assert target.read_bytes() == b"complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "merged.jsonl"]


def test_a_missing_source_leaves_no_partial_file(tmp_path):
    tmp_path = tmp_path / "here"
    tmp_path.mkdir()
    target = tmp_path / "merged.jsonl"
    source = tmp_path / "a.jsonl"
    source.write_bytes(b"x\n")
    with pytest.raises(BatchledgerError, match=r"could not read .*gone\.jsonl: No such file"):
        concat(target, [source, tmp_path / "gone.jsonl"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]
