import re

import pytest

from helpers import datasets, published


@pytest.mark.parametrize("row", published.ROWS, ids=lambda r: r.model)
def test_every_published_row_has_exact_provenance_and_a_protocol(row):
    assert row.protocol in published.PROTOCOLS
    assert re.fullmatch(r"[0-9a-f]{40}", row.commit) and row.repo.count("/") == 1 and row.path
    assert row.url == f"https://github.com/{row.repo}/blob/{row.commit}/{row.path}"
    assert row.differs and row.quote


@pytest.mark.parametrize("row", published.ROWS, ids=lambda r: r.model)
def test_every_number_is_in_the_quoted_source_line(row):
    for value in row.values.values():
        assert f"{value:.4f}" in row.quote


@pytest.mark.parametrize("row", published.ROWS, ids=lambda r: r.model)
def test_the_numbers_are_consistent(row):
    v = row.values
    assert all(0 <= x <= 1 for x in v.values())
    assert v["ndcg@10"] <= v["hr@10"]  # NDCG@K never exceeds HR@K with one relevant item
    if "hr@1" in v:
        assert v["hr@1"] <= v["hr@5"] <= v["hr@10"]
        assert v["ndcg@5"] <= v["hr@5"] and v["ndcg@5"] <= v["ndcg@10"]


@pytest.mark.parametrize("row", published.ROWS, ids=lambda r: r.model)
def test_a_row_is_on_the_course_s_own_file_or_says_loudly_that_it_is_not(row):
    if row.same_file:
        spec = datasets.get_spec(row.dataset)
        assert all(spec.files[path] == sha for path, sha in row.data_sha256.items())
    else:
        assert row.dataset not in datasets.DATASETS and row.differs.startswith("ANOTHER FILE")


def test_table_filters_by_dataset():
    table = published.table("beauty")
    assert len(table) == sum(r.dataset == "beauty" for r in published.ROWS) > 0
    assert table["same file"].all() and set(published.table()["protocol"]) <= set(published.PROTOCOLS)
    assert published.table("no such data").empty
