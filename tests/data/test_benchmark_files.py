"""Benchmarks as data: the YAML files, their orders, name resolution and `clift ls benchmarks`."""

from __future__ import annotations

import pytest
import yaml

from clift.config import DataConfig
from clift.data.benchmarks import (
    BENCHMARK_DIR,
    benchmark_registry,
    canonical_order,
    format_benchmarks_table,
    get_benchmark,
    list_benchmarks,
    load_benchmark_file,
    load_stream,
    task_catalog,
)
from clift.errors import ConfigError, DataError, RegistryError

PAPER_ORDERS = {
    "standard": {
        "o1": ["dbpedia", "amazon", "yahoo", "agnews"],
        "o2": ["dbpedia", "amazon", "agnews", "yahoo"],
        "o3": ["yahoo", "amazon", "agnews", "dbpedia"],
    },
    "long": {
        "o4": [
            "MNLI",
            "CB",
            "WiC",
            "COPA",
            "QQP",
            "BoolQA",
            "RTE",
            "IMDB",
            "yelp",
            "amazon",
            "SST-2",
            "dbpedia",
            "agnews",
            "MultiRC",
            "yahoo",
        ],
        "o5": [
            "MultiRC",
            "BoolQA",
            "WiC",
            "MNLI",
            "CB",
            "COPA",
            "QQP",
            "RTE",
            "IMDB",
            "SST-2",
            "dbpedia",
            "agnews",
            "yelp",
            "amazon",
            "yahoo",
        ],
        "o6": [
            "yelp",
            "amazon",
            "MNLI",
            "CB",
            "COPA",
            "QQP",
            "RTE",
            "IMDB",
            "SST-2",
            "dbpedia",
            "agnews",
            "yahoo",
            "MultiRC",
            "BoolQA",
            "WiC",
        ],
    },
    "tc": {"o1": ["dbpedia", "yahoo", "agnews"]},
}


def test_every_yaml_file_parses_and_orders_reference_known_tasks():
    files = sorted(BENCHMARK_DIR.rglob("*.yaml"))
    # rglob + an exact count: a file added in a subfolder, or dropped, must be noticed
    assert [f.name for f in files] == [
        "fixture.yaml",
        "learnable.yaml",
        "long.yaml",
        "standard-proxy.yaml",
        "standard.yaml",
        "tasks.yaml",
        "tc.yaml",
    ]
    kinds = {f.name: yaml.safe_load(f.read_text())["kind"] for f in files}
    assert kinds.pop("tasks.yaml") == "task-catalog"
    assert set(kinds.values()) == {"benchmark"}
    for name in kinds:
        spec = load_benchmark_file(BENCHMARK_DIR / name)
        assert spec.orders, name
        for order, seq in spec.orders.items():
            assert set(seq) <= set(spec.tasks), (name, order)
            assert len(seq) == len(set(seq)), (name, order)
    assert benchmark_registry().names() == ["fixture", "learnable", "long", "standard", "standard-proxy", "tc"]


def test_orders_are_the_papers():
    for bench, orders in PAPER_ORDERS.items():
        spec = get_benchmark(bench)
        assert {k: list(v) for k, v in spec.orders.items()} == orders
        for seq in spec.orders.values():  # every paper order is a permutation of the benchmark
            assert sorted(seq) == sorted(spec.tasks)


def test_standard_proxy_is_standard_with_yahoo_replaced_by_mnli():
    std, proxy = get_benchmark("standard"), get_benchmark("standard-proxy")
    swap = {"yahoo": "MNLI"}
    assert {k: [swap.get(t, t) for t in v] for k, v in std.orders.items()} == {
        k: list(v) for k, v in proxy.orders.items()
    }


def test_learnable_orders_are_permutations_with_each_task_once_per_position():
    spec = get_benchmark("learnable")
    assert spec.tasks == ("dbpedia", "agnews", "IMDB", "yelp")
    orders = [list(seq) for seq in spec.orders.values()]
    assert len(orders) == 3 and all(sorted(seq) == sorted(spec.tasks) for seq in orders)
    for position in range(4):  # a task's position (early, late) is not confounded with the task
        assert len({seq[position] for seq in orders}) == 3
    assert {seq[-1] for seq in orders} == {"yelp", "agnews", "IMDB"}


def test_catalog_defines_the_15_tasks_once():
    cat = task_catalog()
    assert len(cat.tasks) == 15
    assert cat.tasks["COPA"].show_options is False and cat.tasks["COPA"].instruction == ""
    assert cat.tasks["agnews"].labels == ("World", "Sports", "Business", "Science or Technology")
    assert cat.tasks["WiC"].labels == ("True", "False") and cat.tasks["QQP"].labels == ("False", "True")
    assert cat.tasks["MNLI"].instruction.startswith('What is the logical relationship between the "sentence 1"')
    for spec in cat.tasks.values():
        assert spec.instruction == "" or spec.instruction.endswith("\n")
    # benchmark files reference the catalog instead of repeating definitions
    for name in ("standard", "standard-proxy", "long", "tc", "learnable"):
        raw = yaml.safe_load((BENCHMARK_DIR / f"{name}.yaml").read_text())
        assert isinstance(raw["tasks"], list) and raw["include"] == "tasks.yaml"
        spec = get_benchmark(name)
        assert all(spec.task_specs[t] is cat.tasks[t] for t in spec.tasks)


@pytest.mark.parametrize("alias", [1, "1", "o1", "O1", "order1", "order_1", " o1 "])
def test_order_aliases(alias):
    assert canonical_order(alias) == "o1"
    assert get_benchmark("standard-proxy").order(alias) == ("o1", ("dbpedia", "amazon", "MNLI", "agnews"))


def test_unknown_benchmark_suggests_near_matches():
    with pytest.raises(
        RegistryError, match=r"unknown benchmark 'standrd'.*Did you mean 'standard'.*Available: fixture"
    ):
        load_stream(DataConfig(benchmark="standrd"))


def test_unknown_order_lists_the_orders():
    with pytest.raises(ConfigError, match=r"unknown order '1' for benchmark 'long'.*Available orders: o4, o5, o6"):
        load_stream(DataConfig(benchmark="long", order="1"))


def test_unknown_task_suggests_near_matches():
    with pytest.raises(ConfigError, match=r"unknown task 'mnli'.*Did you mean 'MNLI'.*dbpedia, amazon, MNLI, agnews"):
        load_stream(DataConfig(benchmark="standard-proxy", tasks=["amazon", "mnli"]))


def test_explicit_task_list_replaces_the_order():
    stream = load_stream(DataConfig(benchmark="standard-proxy", tasks=["agnews", "MNLI"], train_per_task=4), 0)
    assert stream.task_names == ["agnews", "MNLI"]
    assert stream.name == "standard-proxy/tasks=agnews,MNLI"


def test_fixture_benchmark_loads_offline_with_family_instructions():
    stream = load_stream(DataConfig(benchmark="fixture", order="2"), 0)
    assert stream.name == "fixture/o2" and stream.task_names == ["toynli", "toytopic", "toysent"]
    nli = stream[0]
    assert nli.family == "NLI" and nli.labels == ("entailment", "contradiction")
    assert nli.prompt("S").startswith(
        'Task:NLI\nDataset:toynli\nWhat is the logical relationship between the "sentence 1"'
    )
    assert nli.prompt("S").endswith("Option: entailment, contradiction \nS\nAnswer:")
    for task in stream:  # 112 train rows: 20 % carved as dev, the rest trains; the test file is kept
        assert (len(task.train), len(task.dev), len(task.test)) == (90, 22, 48)


def test_list_benchmarks_reports_yahoo_dependent_benchmarks_as_not_available():
    infos = {i.name: i for i in list_benchmarks()}
    assert set(infos) == {"fixture", "learnable", "long", "standard", "standard-proxy", "tc"}
    for name in ("standard", "long", "tc"):
        assert not infos[name].available and set(infos[name].missing) == {"yahoo"}
        assert infos[name].source == "pack"
    assert infos["standard-proxy"].available and infos["standard-proxy"].source == "pack"
    assert infos["learnable"].available and infos["learnable"].source == "pack"
    assert infos["fixture"].available and infos["fixture"].source == "fixture"
    assert list(infos["long"].orders) == ["o4", "o5", "o6"]


def test_benchmarks_table_shows_orders_and_availability():
    text = format_benchmarks_table()
    assert "standard-proxy" in text and "o3: MNLI → amazon → agnews → dbpedia" in text
    line = next(x for x in text.splitlines() if x.startswith("standard "))
    assert "MISSING yahoo" in line
    assert "data_dir=" in text


def test_a_yahoo_benchmark_fails_with_one_error_naming_the_file_and_the_fix():
    with pytest.raises(DataError) as err:
        load_stream(DataConfig(benchmark="tc"))
    msg = str(err.value)
    assert "yahoo" in msg and "TC/yahoo/train.json" in msg
    assert "data.data_dir" in msg and "standard-proxy" in msg


def test_benchmark_file_problems_are_reported_together(tmp_path):
    (tmp_path / "tasks.yaml").write_text((BENCHMARK_DIR / "tasks.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: benchmark\nname: bad\ninclude: tasks.yaml\ntasks: [agnews, amazon]\n"
        "ordrs: {}\norders:\n  o1: [agnews, amazn]\n  order1: [amazon]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_benchmark_file(bad)
    msg = str(err.value)
    assert "unknown key 'ordrs'" in msg and "Did you mean 'orders'" in msg
    assert "unknown task(s) ['amazn']" in msg
    assert "defined twice" in msg
    assert str(bad) in msg


def test_a_benchmark_file_can_be_given_by_path(tmp_path):
    (tmp_path / "tasks.yaml").write_text((BENCHMARK_DIR / "tasks.yaml").read_text())
    mine = tmp_path / "mine.yaml"
    mine.write_text("kind: benchmark\nname: mine\ninclude: tasks.yaml\ntasks: [SST-2, CB]\norders: {o1: [CB, SST-2]}\n")
    stream = load_stream(DataConfig(benchmark=str(mine), test_per_task=5), 0)
    assert stream.name == "mine/o1" and stream.task_names == ["CB", "SST-2"]
