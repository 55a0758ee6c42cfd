"""`rft-fast results import` (rft_fast.results.importing): one scale per file (declared, or auto refusing a mix),
names through the registries, short / long rows, bad numbers and malformed files as ValueErrors naming the line,
all or nothing, run ids under "import:", and memory that does not grow with the file's bytes."""

from __future__ import annotations

import re
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from rft_fast import cli, report
from rft_fast.results import Measurement, Store, importing
from rft_fast.results.importing import MAX_ROW_CHARS, REQUIRED_COLUMNS, import_csv, read_csv

RESNET, DEIT_T = "resnet50.a1_in1k", "deit_tiny_patch16_224.fb_in1k"
HEADER = ",".join(REQUIRED_COLUMNS)


def write(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join((header, *rows)) + "\n", encoding="utf-8")
    return path


def accuracies(ms: list[Measurement]) -> dict[tuple[str, str], float]:
    return {(m.backbone, m.threat): m.accuracy for m in ms}


# ---------------------------------------------------------------------------------------------------- basics
CSV = """\
backbone,dataset,loss,protocol,clean,Linf,L2,L1,common
resnet50.a1_in1k,caltech101,trades,FFT-50,85.5,40.1,55.0,,70.2
deit_tiny_patch16_224.fb_in1k,caltech101,classic_at,FFT-50,80,35,50,20,65
"""


def test_import_percent_csv(tmp_path: Path):
    path = tmp_path / "study.csv"
    path.write_text(CSV)
    with Store(tmp_path / "s.sqlite") as store:
        assert import_csv(path, store) == 9  # 4 (L1 missing) + 5
        ms = store.query(backbone=RESNET)
        assert sorted(m.threat for m in ms) == ["L2", "Linf", "clean", "corruption"]
        by = {m.threat: m for m in ms}
        assert by["clean"].accuracy == pytest.approx(0.855) and by["Linf"].accuracy == pytest.approx(0.401)
        assert (by["Linf"].eps, by["L2"].eps, by["Linf"].mode) == (pytest.approx(4 / 255), 2.0, "standard")
        assert (by["corruption"].corruption, by["corruption"].severity, by["corruption"].accuracy) == (
            "study",
            3,
            pytest.approx(0.702),
        )
        assert by["clean"].run_id == "import:resnet50.a1_in1k:caltech101:trades:FFT-50"
        assert by["clean"].versions == {
            "source": "import",
            "file": "study.csv",
            "scale": "percent",
            "layout": "rft-fast",
        }
        assert by["clean"].n == 1000 and by["clean"].hparams == {} and by["clean"].seconds == 0.0
        assert import_csv(path, store) == 9  # again: the same keys replaced, nothing added
        assert len(store.query()) == 9
        rows = {r.loss: r for r in report.rows_from_store(store)}
    assert (rows["trades"].L1, rows["trades"].L2, rows["classic_at"].L1) == (
        None,
        pytest.approx(0.55),
        pytest.approx(0.2),
    )


def test_import_fractions_and_optional_columns(tmp_path: Path):
    path = tmp_path / "own.csv"
    path.write_text(
        "Backbone,dataset,loss,protocol,clean,Linf,L2,L1,common,Linf_eps,mode,run_id,n,source\n"
        "someone_elses_net,pets,trades,FFT-5,0.9,0.4,NA,-,,8/255,fast,r7,500,paper table 3\n"
    )
    with Store(tmp_path / "s.sqlite") as store:
        assert import_csv(path, store, run_prefix="x") == 2
        linf = store.query(threat="Linf")[0]
    assert (linf.accuracy, linf.eps, linf.mode, linf.n) == (0.4, pytest.approx(8 / 255), "fast", 500)
    assert linf.run_id == "import:x:r7"  # the run_id cell kept, under the import namespace
    assert linf.versions == {"source": "paper table 3", "file": "own.csv", "scale": "fraction", "layout": "rft-fast"}


@pytest.mark.parametrize(
    "header, message",
    [
        (",".join(c for c in REQUIRED_COLUMNS if c != "common"), "line 1: missing required column.*common"),
        (HEADER + ",colour", "line 1: unknown column 'colour'"),
        (HEADER + ",linf", "line 1: column 'Linf' given twice"),
        (HEADER.replace(",", ";"), "separated by commas.*';'"),
        (HEADER + ",", "line 1: unknown column '' \\(an empty header cell: a trailing comma\\?\\)"),
        ("\n\n" + HEADER + ",x" * 100, "line 3: unknown column 'x'"),  # blank lines before the header counted
    ],
)
def test_import_column_errors(tmp_path: Path, header: str, message: str):
    path = write(tmp_path, f"{RESNET},pets,trades,FFT-50,90,40,50,20,70", header=header)
    with Store(tmp_path / "s.sqlite") as store, pytest.raises(ValueError, match=message):
        import_csv(path, store)


def test_import_cell_errors_write_nothing(tmp_path: Path):
    body = textwrap.dedent("""\
        backbone,dataset,loss,protocol,clean,Linf,L2,L1,common
        resnet50.a1_in1k,pets,trades,FFT-50,90,40,50,20,70
        resnet50.a1_in1k,pets,trades,FFT-50,91,40,50,20,70
    """)
    path = tmp_path / "bad.csv"
    with Store(tmp_path / "s.sqlite") as store:
        for text, message in (
            (body, "line 3: the same configuration and threat .* as line 2"),
            (body.replace(",91,", ",abc,"), "line 3, column clean: not a finite number: 'abc'"),
            (body.replace(",91,", ",101,"), r"line 3, column clean: accuracy 101 outside \[0, 1\]"),
            (body.replace(",91,", ",91,1,"), "line 3: 10 cells, more than the header's 9"),
        ):
            path.write_text(text)
            with pytest.raises(ValueError, match=message):
                import_csv(path, store)
        assert store.query() == []


# ---------------------------------------------------------------------------------------------------- scale
def test_auto_scale_one_per_file(tmp_path: Path):
    # all in [0, 1]: fractions; some in (1, 100] and none in (0, 1]: percent. 0 is 0 in both and never decides.
    fraction = write(tmp_path, f"{RESNET},pets,trades,FFT-50,0.8,0.4,1,0,0.5", name="f.csv")
    assert accuracies(read_csv(fraction))[(RESNET, "clean")] == 0.8
    assert accuracies(read_csv(fraction))[(RESNET, "L2")] == 1.0
    percent = write(
        tmp_path,
        f"{RESNET},pets,trades,FFT-50,85,40,55,0,70",
        f"{DEIT_T},pets,trades,FFT-50,80,35,50,0.0,65",
        name="p.csv",
    )
    got = accuracies(read_csv(percent))
    assert got[(RESNET, "clean")] == pytest.approx(0.85) and got[(DEIT_T, "L1")] == 0.0
    assert {m.versions["scale"] for m in read_csv(percent)} == {"percent"}


@pytest.mark.parametrize(
    "first, second, pair, declared",
    [
        (
            "85,40,55,20,70",
            "0.8,35,50,20,65",
            r"line 3, column clean \(0.8\) and line 2, column clean \(85\)",
            ((DEIT_T, "clean"), 0.008),
        ),  # declared percent: 0.8 is 0.8 %
        (
            "0.9,0.4,0.5,0.2,0.7",
            "80,35,50,20,65",
            r"line 2, column clean \(0.9\) and line 3, column clean \(80\)",
            ((RESNET, "clean"), 0.009),
        ),
        (
            "85,40,55,1,70",
            "80,35,50,20,65",
            r"line 2, column L1 \(1\) and line 2, column clean \(85\)",  # 1: 100 % or 1 %
            ((RESNET, "L1"), 0.01),
        ),
    ],
)
def test_auto_refuses_a_mix_naming_the_pair(tmp_path: Path, first: str, second: str, pair: str, declared):
    path = write(tmp_path, f"{RESNET},pets,trades,FFT-50,{first}", f"{DEIT_T},pets,trades,FFT-50,{second}")
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(ValueError, match=pair + r".*cannot be one scale.*scale='percent' \(CLI --scale percent\)"):
            import_csv(path, store)
        assert store.query() == []
        assert import_csv(path, store, scale="percent") == 10
        key, value = declared
        assert accuracies(store.query())[key] == pytest.approx(value)
        with pytest.raises(ValueError, match="> 1 in a file declared fraction"):
            import_csv(path, store, scale="fraction")


def test_declared_scales(tmp_path: Path):
    low = write(tmp_path, f"{RESNET},pets,trades,FFT-50,0.8,0.4,0.5,0.2,1", name="low.csv")
    assert accuracies(read_csv(low, scale="percent"))[(RESNET, "clean")] == pytest.approx(0.008)
    assert accuracies(read_csv(low, scale="fraction"))[(RESNET, "clean")] == 0.8
    assert accuracies(read_csv(low))[(RESNET, "clean")] == 0.8  # auto: all in [0, 1] reads fraction
    high = write(tmp_path, f"{RESNET},pets,trades,FFT-50,85,40,55,20,70", name="high.csv")
    with pytest.raises(ValueError, match="line 2, column clean: accuracy 85 > 1 in a file declared fraction"):
        read_csv(high, scale="fraction")
    over = write(tmp_path, f"{RESNET},pets,trades,FFT-50,85,40,55,20,100.5", name="over.csv")
    for scale in importing.SCALES:
        with pytest.raises(ValueError, match=r"line 2, column common: accuracy 100.5 outside"):
            read_csv(over, scale=scale)
    with pytest.raises(ValueError, match="scale: must be one of auto, fraction, percent"):
        read_csv(high, scale="percentage")


# ---------------------------------------------------------------------------------------------------- names
def test_names_through_the_registries(tmp_path: Path):
    path = write(
        tmp_path,
        "RESNET50.A1_IN1K,Caltech-101,TRADES,fft 50,0.8,0.4,0.5,0.2,0.6",
        "efficientnet-b0,Oxford Pets,Classic AT,lp_50,0.8,0.4,0.5,0.2,0.6",
        "My_Net,MyData,classic,TORA-10 [tora_lambda=0.9],0.8,,,,",
        "my_net,mydata,trades+GRACE,tora 12,0.8,,,,",
    )
    got = {(m.backbone, m.dataset, m.loss, m.protocol) for m in read_csv(path)}
    assert got == {
        (RESNET, "caltech101", "trades", "FFT-50"),
        ("efficientnet_b0.ra_in1k", "oxford_pets", "classic_at", "LP-50"),  # alias -> registered name
        ("My_Net", "MyData", "classic_at", "TORA-10[tora_lambda=0.9]"),  # unknown: kept as given
        ("my_net", "mydata", "trades+grace", "TORA-12"),
    }


def test_trades_and_TRADES_are_one_configuration(tmp_path: Path):
    path = write(tmp_path, f"{RESNET},pets,trades,FFT-50,0.8,,,,", f"{RESNET},pets,TRADES,FFT-50,0.7,,,,")
    with pytest.raises(ValueError, match="line 3: the same configuration and threat \\(clean\\) as line 2"):
        read_csv(path)
    # our own run beside an imported "TRADES" row: one configuration in the report
    path = write(tmp_path, f"{RESNET},caltech101,TRADES,FFT-50,0.8,0.3,,,")
    with Store(tmp_path / "s.sqlite") as store:
        store.put(
            Measurement(
                run_id="0123456789ab",
                dataset="caltech101",
                backbone=RESNET,
                loss="trades",
                protocol="FFT-50",
                hparams={"beta": 1.0},
                threat="clean",
                eps=None,
                corruption=None,
                severity=None,
                mode="-",
                accuracy=0.9,
                n=1000,
                seconds=1.0,
            )
        )
        import_csv(path, store)
        with pytest.warns(UserWarning, match="1 duplicate configuration"):
            (row,) = report.rows_from_store(store)
    assert (row.loss, row.run_id, row.Linf) == ("trades", "import:resnet50.a1_in1k:caltech101:trades:FFT-50", 0.3)


@pytest.mark.parametrize(
    "cells, message",
    [
        ("pets,madry,FFT-50", r"line 2, column loss: unknown loss 'madry'; known: ce, classic_at, trades, "),
        ("pets,trade,FFT-50", r"unknown loss 'trade'; known: .*; did you mean 'trades'\?"),
        ("pets,trades,FFT-500x", r"line 2, column protocol: unknown protocol 'FFT-500x'.*FFT-50, FFT-5, LP-50"),
        ("pets,trades,TORA-1", r"unknown protocol 'TORA-1'"),
        (",trades,FFT-50", "line 2, column dataset: empty"),
        ('"pe\nts",trades,FFT-50', "line 2, column dataset: a control character"),
    ],
)
def test_unknown_or_bad_names_refused(tmp_path: Path, cells: str, message: str):
    path = write(tmp_path, f"{RESNET},{cells},0.8,,,,")
    with pytest.raises(ValueError, match=message):
        read_csv(path)


# ---------------------------------------------------------------------------------------------------- rows, numbers
ROW = f"{RESNET},pets,trades,FFT-50,0.8,0.4,0.5,0.2,0.6"


@pytest.mark.parametrize(
    "rows, message",
    [
        ((ROW, f"{RESNET},pets,ce,FFT-50,0.8,0.4"), "line 3: 6 cells, fewer than the header's 9 columns"),
        ((ROW, ROW.replace("trades", "ce") + ",0.1"), "line 3: 10 cells, more than the header's 9 columns"),
        ((ROW.replace("0.8", "1e400"),), "line 2, column clean: not a finite number: '1e400'"),
        ((ROW.replace("0.8", "inf"),), "line 2, column clean: not a finite number: 'inf'"),
        ((ROW.replace("0.8", "-0.1"),), r"line 2, column clean: accuracy -0.1 outside"),
        ((ROW.replace("0.8", "9" * 5000),), "line 2, column clean: not a finite number: '9999"),  # float: inf
        ((ROW.replace("0.8", "x" * (MAX_ROW_CHARS + 10)),), "line 2: a row of more than 65536 characters"),
        ((ROW + "," * (MAX_ROW_CHARS + 10),), "line 2: a row of more than 65536 characters"),
        ((ROW, '"' + "a\n" * 40000), "line 3.*: a row of more than 65536 characters"),  # a quoted cell over many lines
    ],
)
def test_bad_rows_and_numbers(tmp_path: Path, rows: tuple[str, ...], message: str):
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(ValueError, match=message):
            import_csv(write(tmp_path, *rows), store)
        assert store.query() == []


@pytest.mark.parametrize(
    "column, cell, message",
    [
        ("n", "nan", "line 2, column n: must be a whole number of images >= 1, got 'nan'"),
        ("n", "0", "column n: must be a whole number .* got '0'"),
        ("n", "-5", "column n: .* got '-5'"),
        ("n", "1.5", "column n: .* got '1.5'"),
        ("n", "1" * 5000, "column n: .* got '1111"),
        ("Linf_eps", "0", "line 2, column Linf_eps: must be > 0"),
        ("Linf_eps", "nan", "line 2, column Linf_eps: not a finite number"),
        ("L2_eps", "1/0", "line 2, column L2_eps: not a finite number: '1/0'"),
        ("mode", "turbo", "line 2, column mode: must be one of standard, fast"),
    ],
)
def test_bad_optional_cells(tmp_path: Path, column: str, cell: str, message: str):
    path = write(tmp_path, f"{ROW},{cell}", header=f"{HEADER},{column}")
    with pytest.raises(ValueError, match=message):
        read_csv(path)


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_blank_rows_bom_spaces_quotes_and_line_ends(tmp_path: Path, end: str):
    path = tmp_path / "t.csv"
    text = end.join((HEADER, "", ROW, ",,,,,,,,", f' {DEIT_T} ,"pets", trades ,"FFT-50", 0.5 ,,,,', ""))
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    got = accuracies(read_csv(path))
    assert got == {
        **{(RESNET, t): a for t, a in (("clean", 0.8), ("Linf", 0.4), ("L2", 0.5), ("L1", 0.2), ("corruption", 0.6))},
        (DEIT_T, "clean"): 0.5,
    }
    assert {(m.dataset, m.protocol) for m in read_csv(path)} == {("pets", "FFT-50")}


# ---------------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file: expected a header row"),
        (b"\n\n", "empty file"),
        (HEADER.encode() + b"\n", "no rows after the header"),
        (
            (HEADER + "\n" + ROW.replace("pets", "p\xe9ts") + "\n").encode("latin-1"),
            r"line 2: not UTF-8 text \(byte 0xe9 at character 19 of the line\)",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "line 1: not UTF-8 text"),
        (b"backbone\x00,dataset\n", "line 1: a NUL byte: binary data"),
        ((HEADER + "\n" + ROW.replace("pets", '"pe"ts') + "\n").encode(), "line 2: not valid CSV"),  # a stray quote
    ],
)
def test_malformed_files(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_csv(path)


def test_not_a_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_csv(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="not a regular file"):
        read_csv(tmp_path)


def test_cli_prints_an_error_no_traceback(tmp_path: Path, capsys):
    path = write(tmp_path, ROW.replace("0.8", "1e400"))
    with pytest.raises(SystemExit) as exit:
        cli.main(["results", "import", str(path), "--store", str(tmp_path / "s.sqlite")])
    assert str(exit.value) == "error: line 2, column clean: not a finite number: '1e400'"


# ---------------------------------------------------------------------------------------------------- all or nothing
def test_an_error_on_the_last_row_writes_nothing(tmp_path: Path):
    rows = [ROW.replace(RESNET, f"net{i}") for i in range(200)]
    with Store(tmp_path / "s.sqlite") as store:
        store.put(
            Measurement(
                run_id="mine",
                dataset="pets",
                backbone=RESNET,
                loss="trades",
                protocol="FFT-50",
                hparams={},
                threat="clean",
                eps=None,
                corruption=None,
                severity=None,
                mode="-",
                accuracy=0.5,
                n=10,
                seconds=1.0,
            )
        )
        with pytest.raises(ValueError, match="line 202: 4 cells"):
            import_csv(write(tmp_path, *rows, "a,b,c,d"), store)
        assert [m.run_id for m in store.query()] == ["mine"]


def test_a_file_changed_between_the_passes_writes_nothing(tmp_path: Path, monkeypatch):
    path = write(tmp_path, ROW)
    scan = importing._scan

    def scan_then_edit(*args, **kwargs):
        result = scan(*args, **kwargs)
        path.write_text(f"{HEADER}\n{ROW.replace('0.8', '0.9')}\n")
        return result

    monkeypatch.setattr(importing, "_scan", scan_then_edit)
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(ValueError, match="t.csv changed while it was imported; nothing written"):
            import_csv(path, store)
        assert store.query() == []


# ---------------------------------------------------------------------------------------------------- run ids
def test_run_ids_are_namespaced(tmp_path: Path):
    path = write(
        tmp_path,
        f"{ROW},",
        f"{ROW.replace('trades', 'ce')},0123456789ab",
        f"{ROW.replace('trades', 'classic_at')},import:paper-7",
        header=f"{HEADER},run_id",
    )
    ours = re.compile(r"[0-9a-f]{12}")  # TrainConfig.run_id()
    for prefix, default, given in (
        ("import", "import:", "import:0123456789ab"),
        ("x", "import:x:", "import:x:0123456789ab"),
        ("import:y", "import:y:", "import:y:0123456789ab"),
    ):
        ids = {m.loss: m.run_id for m in read_csv(path, run_prefix=prefix)}
        assert ids == {"trades": f"{default}{RESNET}:pets:trades:FFT-50", "ce": given, "classic_at": "import:paper-7"}
        assert all(i.startswith("import:") and not ours.fullmatch(i) for i in ids.values())
    with pytest.raises(ValueError, match="run_prefix: must be a non-empty name"):
        read_csv(path, run_prefix=" ")


# ---------------------------------------------------------------------------------------------------- memory
def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_files_bytes(tmp_path: Path):
    # a 3 MB file of 300 rows, each with a 10 KB source cell: rows are read one at a time (at most MAX_ROW_CHARS
    # each) and streamed into the store's transaction, so the Python heap holds about one row, never the file.
    # The bound (1.5 MB, half the file) has a wide margin over what one row costs (0.26 MiB peak measured) and
    # fails for any implementation that keeps the file's cells. SQLite's own page cache is outside tracemalloc
    # and bounded by its cache_size.
    rows = [f"net{i},pets,trades,FFT-50,0.8,,,,,{chr(65 + i % 26) * 10_000}" for i in range(300)]
    path = write(tmp_path, *rows, header=f"{HEADER},source")
    assert path.stat().st_size > 3_000_000
    importing._Names()  # the registries' import (timm) is a fixed cost, not the file's
    with Store(tmp_path / "s.sqlite") as store:
        peak = _peak(lambda: import_csv(path, store))
        print(f"peak {peak / 2**20:.2f} MiB importing {path.stat().st_size / 2**20:.2f} MiB")
        assert len(store.query(threat="clean")) == 300
    assert peak < 1_500_000, peak


def test_memory_per_row_is_a_small_digest(tmp_path: Path):
    # pass 1 keeps a 16-byte digest per measurement key (duplicates) and nothing else per row: 2000 rows of 5
    # measurements stay under 250 bytes per measurement (dict entry + bytes object: 115 measured) plus 1 MB.
    rows = [ROW.replace(RESNET, f"net{i}") for i in range(2000)]
    path = write(tmp_path, *rows)
    names = importing._Names()
    peak = _peak(lambda: importing._scan(path, "auto", names, "import"))
    print(f"peak {peak / 2**20:.2f} MiB, {peak / (5 * len(rows)):.0f} B per measurement")
    assert peak < 250 * 5 * len(rows) + 1_000_000, peak
