"""`rft-fast bench regularizers`: the table, the JSON record's rows and argument errors (tiny settings)."""

from __future__ import annotations

import json

import pytest

from rft_fast import cli


def test_bench_regularizers_rows(tmp_path, capsys):
    out = tmp_path / "reg.json"
    assert (
        cli.main(
            [
                "bench",
                "regularizers",
                "--device",
                "cpu",
                "--model",
                "test_resnet",
                "--batch",
                "2",
                "--image-size",
                "32",
                "--attack-steps",
                "1",
                "--losses",
                "classic_at",
                "--variants",
                "gram",
                "grace",
                "consistency",
                "--min-reps",
                "1",
                "--min-seconds",
                "0",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "x plain" in text and "consistency" in text and f"wrote {out}" in text
    record = json.loads(out.read_text())
    assert set(record) == {"meta", "rows"} and "APGD-CE" in record["meta"]["step"]
    rows = record["rows"]
    assert [(r["loss"], r["variant"]) for r in rows] == [("classic_at", v) for v in ("gram", "grace", "consistency")]
    for r in rows:  # plain is timed as the reference but not asked for, so not a row
        assert (r["model"], r["batch"], r["size"]) == ("test_resnet", 2, 32)
        assert r["median_s"] > 0 and r["images_per_s"] == pytest.approx(2 / r["median_s"]) and r["overhead"] > 0


def test_bench_regularizers_plain_is_the_unit(tmp_path, capsys):
    out = tmp_path / "reg.json"
    assert (
        cli.main(
            [
                "bench",
                "regularizers",
                "--device",
                "cpu",
                "--batch",
                "2",
                "--attack-steps",
                "1",
                "--losses",
                "trades",
                "--variants",
                "plain",
                "--min-reps",
                "1",
                "--min-seconds",
                "0",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["loss"], row["variant"], row["overhead"]) == ("trades", "plain", 1.0)


@pytest.mark.parametrize("args", [["--variants", "sam"], ["--losses", "ce"]])
def test_bench_regularizers_rejects_unknown_choices(args, capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "regularizers"] + args)
    assert "invalid choice" in capsys.readouterr().err
