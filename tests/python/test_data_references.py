"""The data magics against reference engines on the same files: a SQL corpus
checked row by row against DuckDB, %describe against Python polars' describe(),
%profile's counts against Python polars. Results are read from the kernel's
machine-readable table view (application/vnd.ferrolab.table+json)."""
import math
import random
from datetime import datetime, timedelta

import duckdb
import polars as pl
import pytest
from jupyter_client.manager import start_new_kernel

from kernel_client import of_type, run

TABLE = "application/vnd.ferrolab.table+json"
PROFILE = "application/vnd.ferrolab.profile+json"
MODELS = ["smollm2", "llama", "qwen", "phi"]


def request_log(n=3000, seed=7):
    rng = random.Random(seed)
    start = datetime(2026, 11, 1)
    rows = []
    for i in range(n):
        model = rng.choice(MODELS)
        tokens = rng.randint(5, 2000)
        rows.append({
            "request_id": i,
            "ts": start + timedelta(seconds=rng.randint(0, 14 * 86400)),
            "user_id": f"u{rng.randint(1, 60)}",
            "model": model,
            "tokens": tokens,
            "latency_ms": round(rng.lognormvariate(4, 0.6), 3),
            "cost": tokens * {"smollm2": 1e-6, "llama": 8e-6, "qwen": 3e-6, "phi": 2e-6}[model],
            "status": "error" if rng.random() < 0.07 else "ok",
            "feedback": rng.choice([None, None, None, 1, -1, 1]),
            "cached": rng.random() < 0.3,
        })
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    log = request_log()
    log.write_parquet(folder / "requests.parquet")
    users = pl.DataFrame({
        "user_id": [f"u{i}" for i in range(1, 61)],
        "team": [["search", "support", "research", "sales", None][i % 5] for i in range(60)],
    })
    users.write_csv(folder / "users.csv")
    km, kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=60)
    for name, path in [("requests", "requests.parquet"), ("users", "users.csv")]:
        content, _ = run(kc, f"%load {name} {folder / path}")
        assert content["status"] == "ok", (content.get("ename"), content.get("evalue"))
    db = duckdb.connect()
    db.execute(f"CREATE VIEW requests AS SELECT * FROM read_parquet('{folder / 'requests.parquet'}')")
    db.execute(f"CREATE VIEW users AS SELECT * FROM read_csv('{folder / 'users.csv'}')")
    try:
        yield kc, db, folder
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def table(kc, code):
    content, messages = run(kc, code)
    assert content["status"] == "ok", (content.get("ename"), content.get("evalue"))
    results = of_type(messages, "execute_result")
    assert len(results) == 1, messages
    return results[0]["content"]["data"]


def same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if a is None or b is None:
        return a is None and b is None
    return str(a) == str(b)


CORPUS = {
    "group by": "SELECT model, COUNT(*) AS n, AVG(latency_ms) AS avg_latency, MAX(tokens) AS max_tokens "
                "FROM requests GROUP BY model ORDER BY model",
    "where and having": "SELECT model, SUM(tokens) AS tokens FROM requests WHERE status = 'ok' "
                        "GROUP BY model HAVING SUM(tokens) > 100000 ORDER BY tokens DESC",
    "join": "SELECT u.team, COUNT(*) AS n, SUM(r.cost) AS cost FROM requests r "
            "JOIN users u ON r.user_id = u.user_id GROUP BY u.team ORDER BY u.team NULLS LAST",
    "left join": "SELECT u.user_id, COUNT(r.request_id) AS n FROM users u "
                 "LEFT JOIN requests r ON r.user_id = u.user_id GROUP BY u.user_id ORDER BY n, u.user_id LIMIT 8",
    "cte": "WITH per_user AS (SELECT user_id, SUM(tokens) AS t FROM requests GROUP BY user_id) "
           "SELECT user_id, t FROM per_user ORDER BY t DESC, user_id LIMIT 5",
    "window rank": "WITH per_user AS (SELECT user_id, SUM(tokens) AS t FROM requests GROUP BY user_id) "
                   "SELECT user_id, t, RANK() OVER (ORDER BY t DESC) AS r FROM per_user ORDER BY r, user_id LIMIT 6",
    "window partition": "SELECT model, request_id, latency_ms FROM ("
                        "SELECT model, request_id, latency_ms, ROW_NUMBER() OVER "
                        "(PARTITION BY model ORDER BY latency_ms DESC) AS rn FROM requests) "
                        "WHERE rn <= 2 ORDER BY model, latency_ms DESC",
    "window aggregate": "SELECT DISTINCT model, AVG(latency_ms) OVER (PARTITION BY model) AS avg_latency "
                        "FROM requests ORDER BY model",
    "case and dates": "SELECT CAST(ts AS DATE) AS day, SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, "
                      "COUNT(*) AS n FROM requests GROUP BY CAST(ts AS DATE) ORDER BY day LIMIT 10",
    "order limit offset": "SELECT request_id, cost FROM requests ORDER BY cost DESC, request_id LIMIT 5 OFFSET 3",
    "in between like": "SELECT COUNT(*) AS n FROM requests WHERE model IN ('smollm2', 'qwen') "
                       "AND tokens BETWEEN 100 AND 500 AND user_id LIKE 'u1%'",
    "count distinct": "SELECT model, COUNT(DISTINCT user_id) AS users FROM requests GROUP BY model ORDER BY model",
    "nulls": "SELECT model, COUNT(feedback) AS rated, AVG(feedback) AS avg_feedback, "
             "SUM(CASE WHEN feedback IS NULL THEN 1 ELSE 0 END) AS unrated FROM requests GROUP BY model ORDER BY model",
    "subquery": "SELECT r.model, COUNT(*) AS slow FROM requests r CROSS JOIN "
                "(SELECT AVG(latency_ms) AS mean FROM requests) a WHERE r.latency_ms > a.mean "
                "GROUP BY r.model ORDER BY r.model",
    "in subquery": "SELECT COUNT(*) AS n FROM requests WHERE user_id IN "
                   "(SELECT user_id FROM users WHERE team = 'search')",
    # Subqueries in comparisons, and subqueries that use the outer query's
    # columns (decorrelated into joins: magics/data/polars-sql/PATCHES.md).
    "scalar subquery": "SELECT model, COUNT(*) AS slow FROM requests "
                       "WHERE latency_ms > (SELECT AVG(latency_ms) FROM requests) GROUP BY model ORDER BY model",
    "scalar subquery in having": "SELECT model, COUNT(*) AS n FROM requests GROUP BY model "
                                 "HAVING COUNT(*) > (SELECT COUNT(*) / 5 FROM requests) ORDER BY model",
    "scalar subquery in select": "SELECT request_id, latency_ms - (SELECT AVG(latency_ms) FROM requests) AS above "
                                 "FROM requests ORDER BY request_id LIMIT 5",
    "correlated scalar subquery": "SELECT r.model, COUNT(*) AS slow FROM requests r WHERE r.latency_ms > "
                                  "(SELECT AVG(i.latency_ms) FROM requests i WHERE i.model = r.model) "
                                  "GROUP BY r.model ORDER BY r.model",
    "correlated count": "SELECT COUNT(*) AS n FROM users u WHERE (SELECT COUNT(*) FROM requests r "
                        "WHERE r.user_id = u.user_id AND r.tokens > 1950) = 0",
    "exists, not an equality": "SELECT COUNT(*) AS n FROM requests r WHERE EXISTS (SELECT 1 FROM requests o "
                               "WHERE o.user_id = r.user_id AND o.model <> r.model AND o.ts < r.ts)",
    "not exists, not an equality": "SELECT COUNT(*) AS n FROM requests r WHERE r.status = 'error' AND NOT EXISTS "
                                   "(SELECT 1 FROM requests o WHERE o.user_id = r.user_id "
                                   "AND o.status = 'error' AND o.ts < r.ts)",
    "exists over two tables": "SELECT COUNT(*) AS n FROM users u WHERE EXISTS (SELECT 1 FROM requests r, users v "
                              "WHERE r.user_id = v.user_id AND v.team = u.team AND r.model = 'phi' "
                              "AND r.status = 'error')",
    # Text columns with few values are held as categoricals in memory; these
    # need the text itself (string functions, a join with a text literal,
    # comparisons and MIN/MAX in text order).
    "string functions": "SELECT UPPER(model) AS m, COUNT(*) AS n FROM requests "
                        "WHERE model LIKE 's%' OR status <> 'ok' GROUP BY UPPER(model) ORDER BY m",
    "join on text literal": "SELECT r.model, COUNT(*) AS n FROM requests r "
                            "JOIN (SELECT 'qwen' AS model) k ON r.model = k.model GROUP BY r.model",
    "text order": "SELECT MIN(model) AS lo, MAX(model) AS hi, "
                  "SUM(CASE WHEN model < 'q' THEN 1 ELSE 0 END) AS before_q FROM requests",
    "union all": "SELECT 'ok' AS kind, COUNT(*) AS n FROM requests WHERE status = 'ok' "
                 "UNION ALL SELECT 'error' AS kind, COUNT(*) AS n FROM requests WHERE status = 'error' ORDER BY kind",
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_sql_corpus_matches_duckdb(data, name):
    kc, db, _ = data
    query = CORPUS[name]
    got = table(kc, f"%%sql\n{query}")[TABLE]
    want = db.execute(query).fetchall()
    assert got["shape"][0] == len(want) <= 10, (got, want)
    assert len(got["rows"]) == len(want)
    for got_row, want_row in zip(got["rows"], want):
        assert len(got_row) == len(want_row)
        assert all(same(g, w) for g, w in zip(got_row, want_row)), (name, got_row, want_row)


DENSE_JOINS = {
    "inner": "SELECT COUNT(*) AS n, SUM(e.w) AS w, SUM(i.price) AS price FROM events e JOIN items i ON e.item_id = i.item_id",
    "left": "SELECT COUNT(*) AS n, COUNT(i.price) AS priced, SUM(i.price) AS price "
            "FROM events e LEFT JOIN items i ON e.item_id = i.item_id",
    "right": "SELECT COUNT(*) AS n, COUNT(e.w) AS matched, SUM(i.price) AS price "
             "FROM events e RIGHT JOIN items i ON e.item_id = i.item_id",
    "full": "SELECT COUNT(*) AS n, COUNT(e.w) AS left_rows, COUNT(i.price) AS right_rows "
            "FROM events e FULL JOIN items i ON e.item_id = i.item_id",
    "grouped": "SELECT i.kind, COUNT(*) AS n, SUM(e.w) AS w FROM events e JOIN items i "
               "ON e.item_id = i.item_id GROUP BY i.kind ORDER BY i.kind",
}


@pytest.mark.parametrize("how", list(DENSE_JOINS))
def test_joins_on_dense_integer_keys_match_duckdb(data, how):
    """Integer keys in a dense range take the engine's direct-index probe
    (magics/data/polars-expr/PATCHES.md): gaps, repeated keys, nulls and keys
    outside the range, every join type."""
    kc, db, folder = data
    if not (folder / "items.parquet").exists():
        rng = random.Random(11)
        pl.DataFrame({
            "item_id": [rng.randint(-50, 1400) for _ in range(1000)],
            "price": [rng.randint(1, 100) for _ in range(1000)],
            "kind": [rng.choice(["a", "b", "c"]) for _ in range(1000)],
        }).write_parquet(folder / "items.parquet")
        pl.DataFrame({
            "item_id": [None if rng.random() < 0.02 else rng.randint(-100, 1500) for _ in range(20000)],
            "w": [rng.randint(1, 10) for _ in range(20000)],
        }).write_parquet(folder / "events.parquet")
        for name in ("items", "events"):
            content, _ = run(kc, f"%load {name} {folder / name}.parquet")
            assert content["status"] == "ok", content
            db.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{folder / name}.parquet')")
    query = DENSE_JOINS[how]
    got = table(kc, f"%%sql\n{query}")[TABLE]
    want = db.execute(query).fetchall()
    assert len(got["rows"]) == len(want) and sum(r[1 if how == "grouped" else 0] for r in want) > 1000, (got, want)
    for got_row, want_row in zip(got["rows"], want):
        assert len(got_row) == len(want_row)
        assert all(same(g, w) for g, w in zip(got_row, want_row)), (how, got_row, want_row)


def test_text_columns_stay_text(data):
    kc, _, _ = data
    listing = table(kc, "%tables")[TABLE]
    memory = listing["columns"].index("memory")
    assert all(row[memory].startswith("in memory") for row in listing["rows"]), listing
    got = table(kc, "%%sql\nSELECT model, status, COUNT(*) AS n FROM requests GROUP BY model, status")[TABLE]
    assert got["dtypes"][:2] == ["str", "str"], got["dtypes"]


def test_describe_matches_python_polars(data):
    kc, _, folder = data
    want = pl.read_parquet(folder / "requests.parquet").describe()
    got = table(kc, "%describe requests")[TABLE]
    assert got["columns"] == want.columns
    assert got["shape"] == list(want.shape)
    for got_row, want_row in zip(got["rows"], want.rows()):
        for column, g, w in zip(want.columns, got_row, want_row):
            if column == "ts" and w is not None and want_row[0] not in ("count", "null_count"):
                # Python prints datetimes with str(); the same instant either way.
                assert datetime.fromisoformat(g) == datetime.fromisoformat(w), (g, w)
            else:
                assert same(g, w), (want_row[0], column, g, w)


def test_profile_counts_match_python_polars(data):
    kc, _, folder = data
    frame = pl.read_parquet(folder / "requests.parquet")
    bundle = table(kc, "%profile requests")
    report = bundle[PROFILE]
    assert report["rows"] == frame.height
    for column in report["columns"]:
        series = frame[column["name"]]
        assert column["nulls"] == series.null_count(), column
        assert column["distinct"] == series.drop_nulls().n_unique(), column
        if column["numbers"]:
            assert same(column["numbers"]["mean"], series.mean()), column
            assert same(column["numbers"]["max"], series.max()), column
    assert any("`feedback` has" in w and "nulls" in w for w in report["warnings"]), report["warnings"]
    html = bundle["text/html"]
    assert html.count("<svg") == len(report["columns"])


@pytest.mark.parametrize("query, ename, words", [
    ("SELECT model\nFROM requests\nWHERE tokens = = 2", "SqlSyntaxError", "Line: 3, Column: 16"),
    ("SELECT model FROM requests WHERE", "SqlSyntaxError", "end of the query (Line: 1, Column: 33)"),
    ("SELECT model FROM requests FOR UPDATE", "SqlUnsupported", "FOR UPDATE"),
    ("SELECT COUNT(*) AS n FROM requests r WHERE latency_ms > "
     "(SELECT AVG(latency_ms) FROM requests i WHERE i.tokens < r.tokens)",
     "SqlUnsupported", "`i.tokens < r.tokens` is not supported"),
    ("SELECT COUNT(*) AS n FROM requests r WHERE latency_ms > "
     "(SELECT i.latency_ms FROM requests i WHERE i.request_id = r.request_id)",
     "SqlUnsupported", "must aggregate its rows"),
    ("SELECT COUNT(*) AS n FROM requests r WHERE r.tokens > 1000 OR r.latency_ms > "
     "(SELECT AVG(i.latency_ms) FROM requests i WHERE i.user_id = r.user_id)",
     "SqlUnsupported", "if it refers to the outer query, that is not supported here"),
    ("SELECT model FROM requests WHERE latency_ms > (SELECT latency_ms FROM requests)",
     "DataError", "more than one row"),
    ("SELECT nope(tokens) FROM requests", "SqlUnsupported", "'nope'"),
])
def test_unsupported_and_bad_sql_say_what_and_where(data, query, ename, words):
    kc, _, _ = data
    content, messages = run(kc, f"%%sql\n{query}")
    assert content["status"] == "error"
    assert (content["ename"], words in content["evalue"]) == (ename, True), content["evalue"]
    assert len(of_type(messages, "error")) == 1
    assert table(kc, "%sql SELECT COUNT(*) AS n FROM requests")[TABLE]["rows"] == [[3000]]
