"""data_transformation, run in memory with `run_task`."""

from __future__ import annotations

from example_tasks.data_transformation import synthetic_dataset, transform_data
from taskcore.testing import run_task


def test_the_synthetic_dataset_is_deterministic():
    assert synthetic_dataset(20) == synthetic_dataset(20)
    assert len(synthetic_dataset(20)) == 20


def test_normalize_scales_numeric_fields_to_the_unit_range():
    records = [{"a": 10, "b": "x"}, {"a": 20, "b": "y"}, {"a": 15, "b": "z"}]
    result = run_task(transform_data, records=records).json("results.json")

    assert [r["a"] for r in result["records"]] == [0.0, 1.0, 0.5]
    assert result["bounds"]["a"] == {"min": 10, "max": 20}


def test_aggregate_groups_and_sums():
    records = [{"k": "x", "v": 1}, {"k": "x", "v": 3}, {"k": "y", "v": 5}]
    run = run_task(transform_data, records=records, transformation="aggregate", group_by="k")
    groups = run.json("results.json")["groups"]

    assert groups["x"]["count"] == 2 and groups["x"]["v"]["sum"] == 4
    assert groups["y"]["v"]["mean"] == 5


def test_filter_keeps_matching_records():
    records = [{"v": 1}, {"v": 5}, {"v": 9}, {"w": 100}]
    condition = {"field": "v", "op": "gte", "value": 5}
    run = run_task(transform_data, records=records, transformation="filter", filter=condition)

    assert run.json("results.json")["records"] == [{"v": 5}, {"v": 9}]


def test_csv_input_is_parsed_with_numbers():
    run = run_task(
        transform_data,
        source_uri="gs://local-task-outputs/uploads/d.csv",
        transformation="aggregate",
        inputs={"uploads/d.csv": (b"k,v\nx,1\ny,2.5\n", "text/csv")},
    )

    assert run.json("results.json")["groups"]["all"]["v"]["sum"] == 3.5
