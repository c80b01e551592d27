"""The 22 TPC-H queries through the kernel's %%sql give DuckDB's answers, at a small
scale factor generated here (bench/tpch/: the queries with the specification's
validation parameters, tpchgen-cli's data; `make bench-tpch` times them at SF1
and SF10). Every row is compared: each query is also kept with `%%sql --out` and
read back in full through a Rust cell."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "tpch"))
import tpch  # noqa: E402

TABLE = "application/vnd.ferrolab.table+json"
# Small enough for a test, large enough that every query but Q17's few parts has rows.
SF = 0.05


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tpch.generate(tmp_path_factory.mktemp("tpch") / f"sf{SF}", SF)


@pytest.fixture(scope="module")
def kernel(data):
    kernel = tpch.Kernel(own_prefix=False)
    try:
        kernel.load(data)
        yield kernel
    finally:
        kernel.shutdown()


def test_every_query_gives_duckdbs_answer(kernel, data):
    expected = tpch.answers(data, SF)
    # The data is big enough for the comparison to mean something.
    assert sum(1 for rows in expected.values() if rows) >= 21, {n: len(r) for n, r in expected.items()}
    failed = {}
    for name, sql in tpch.queries(SF).items():
        content, messages = kernel.sql(sql)
        if content["status"] != "ok":
            failed[name] = f"{content['ename']}: {content['evalue']}"
            continue
        shown = next(m["content"]["data"][TABLE] for m in messages if m["msg_type"] == "execute_result")
        if shown["shape"][0] != len(expected[name]):
            failed[name] = f"shows {shown['shape'][0]} rows, DuckDB has {len(expected[name])}"
            continue
        content, _ = kernel.sql(sql, out=f"r_{name}")
        assert content["status"] == "ok", content
    assert not failed, "\n".join(f"{n}: {why}" for n, why in failed.items())
    rows = kernel.results([f"r_{n}" for n in tpch.NAMES])
    wrong = {}
    for name, sql in tpch.queries(SF).items():
        problem = tpch.compare(expected[name], rows[f"r_{name}"], tpch.ordered(sql))
        if problem:
            wrong[name] = problem
    assert not wrong, "\n".join(f"{n}: {why}" for n, why in wrong.items())


def test_an_unsupported_construct_is_named(kernel):
    content, messages = kernel.sql(
        "select count(*) from part where p_retailprice > "
        "(select avg(ps_supplycost) from partsupp where ps_partkey <> p_partkey)")
    assert content["status"] == "error"
    assert content["ename"] == "SqlUnsupported", content
    assert "`ps_partkey <> p_partkey` is not supported" in content["evalue"], content["evalue"]
    # The tables are still there.
    content, _ = kernel.sql("select count(*) as n from region")
    assert content["status"] == "ok"
