"""scripts/paper_claims.py: a claim's verdict follows its interval, read from published run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clift.errors import ConfigError
from clift.stats import ratio_of_means

from ..conftest import fake_results, load_script


def _load():
    return load_script("scripts/paper_claims.py")


@pytest.mark.parametrize(
    ("low", "high", "bound", "side", "expected"),
    [
        (1.0, 3.0, 0.0, "above", "supported"),
        (-3.0, -1.0, 0.0, "above", "contradicted"),
        (-1.0, 1.0, 0.0, "above", "not resolved"),
        (None, None, 0.0, "above", "not resolved"),  # one pair: no interval, no verdict
        (0.9, 1.05, 1.10, "below", "supported"),
        (1.12, 1.3, 1.10, "below", "contradicted"),
        (-0.8, 0.5, -1.0, "above", "supported"),  # within 1 point: the whole interval above −1
    ],
)
def test_verdict_reads_only_the_interval(low, high, bound, side, expected):
    assert _load().verdict(low, high, bound, side) == expected


def _publish_runs(root: Path, suite: str, label: str, aa: list[float]) -> None:
    for i, value in enumerate(aa, 1):
        run_dir = root / "results" / suite / "runs" / label / f"o{i}-s1"
        run_dir.mkdir(parents=True)
        res = fake_results(label, {"aa": value, "bwt": -value / 10}, order=f"o{i}")
        (run_dir / "results.json").write_text(json.dumps(res), encoding="utf-8")


def _claims(root: Path, tests: list[dict]) -> Path:
    path = root / "claims.yaml"
    claims = [{"paper": "P", "claim": f"claim {i}", "test": t} for i, t in enumerate(tests)]
    path.write_text(yaml.safe_dump({"suite": "s", "claims": claims}), encoding="utf-8")
    return path


def test_paired_and_within_claims_on_published_runs(tmp_path):
    pub = _load()
    _publish_runs(tmp_path, "s", "ref", [40.0, 46.0, 50.0])
    _publish_runs(tmp_path, "s", "new", [50.0, 54.0, 59.0])  # differences 10, 8, 9
    _, claims = pub.load_claims(
        _claims(
            tmp_path,
            [
                {"kind": "paired", "method": "new", "reference": "ref", "metric": "aa", "expect": "higher"},
                {"kind": "paired", "method": "new", "reference": "ref", "metric": "aa", "expect": "lower"},
                {"kind": "within", "method": "ref", "reference": "new", "metric": "aa", "margin": 5.0},
                {"kind": "paired", "method": "absent", "reference": "ref", "metric": "aa", "expect": "higher"},
            ],
        )
    )
    rows = [pub.evaluate(c, "s", tmp_path) for c in claims]
    # mean 9, s = 1, t(0.975, 2) = 4.303: 9 ± 4.303/√3 = [6.5, 11.5]
    assert rows[0]["n"] == 3 and rows[0]["estimate"] == "+9.0 [+6.5, +11.5]"
    assert [r["verdict"] for r in rows] == ["supported", "contradicted", "contradicted", "not measured"]
    assert rows[0]["measured"] == "new − ref, AA (s)"


def test_paired_claim_without_spread_is_not_resolved(tmp_path):
    pub = _load()
    _publish_runs(tmp_path, "s", "ref", [40.0, 46.0])
    _publish_runs(tmp_path, "s", "new", [43.0, 49.0])  # both pairs +3: interval [+3, +3], zero width
    _, claims = pub.load_claims(
        _claims(tmp_path, [{"kind": "paired", "method": "new", "reference": "ref", "metric": "aa", "expect": "higher"}])
    )
    row = pub.evaluate(claims[0], "s", tmp_path)
    assert row["estimate"] == "+3.0 [+3.0, +3.0]" and row["verdict"] == "not resolved"


def test_step_cost_claim_uses_the_ratio_of_mean_step_times(tmp_path):
    pub = _load()
    cost = {"results": {"a": {"step_s_all": [3.0, 3.0, 3.0]}, "b": {"step_s_all": [2.0, 2.0, 2.0]}}}
    (tmp_path / "cost.json").write_text(json.dumps(cost), encoding="utf-8")
    test = {"kind": "step_cost", "file": "cost.json", "method": "a", "reference": "b", "at_most": 1.77}
    row = pub.evaluate({"paper": "P", "claim": "c", "test": test}, "s", tmp_path)
    assert row["estimate"] == "1.50× [1.50, 1.50]" and row["verdict"] == "supported"


def test_ratio_of_means_interval_holds_the_estimate():
    ratio, (low, high) = ratio_of_means([2.0, 2.2, 1.8, 2.1], [1.0, 1.1, 0.9, 1.0], n_resamples=500, seed=3)
    assert ratio == pytest.approx(8.1 / 4.0)
    assert low < ratio < high
    with pytest.raises(ValueError):
        ratio_of_means([], [1.0])


def test_bad_claims_are_refused_naming_the_claim(tmp_path):
    pub = _load()
    path = _claims(
        tmp_path,
        [
            {"kind": "paired", "method": "a", "reference": "b", "metric": "aa"},
            {"kind": "paired", "method": "a", "reference": "b", "metric": "acc", "expect": "higher"},
            {"kind": "guess"},
        ],
    )
    with pytest.raises(ConfigError) as err:
        pub.load_claims(path)
    text = str(err.value)
    assert "claims[0]: missing expect" in text and "metric 'acc'" in text and "claims[2]" in text


def test_publish_writes_the_table_and_regenerates_it_byte_identically(tmp_path):
    pub = _load()
    _publish_runs(tmp_path, "s", "ref", [40.0, 46.0])
    _publish_runs(tmp_path, "s", "new", [50.0, 54.0])
    claims = _claims(
        tmp_path, [{"kind": "paired", "method": "new", "reference": "ref", "metric": "bwt", "expect": "lower"}]
    )
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- claims:s -->\nold\n<!-- /claims:s -->\ny\n", encoding="utf-8")
    out = pub.publish(claims, root=tmp_path, readme=readme)
    first = (out.read_bytes(), readme.read_bytes())
    pub.publish(claims, root=tmp_path, readme=readme)
    assert (out.read_bytes(), readme.read_bytes()) == first
    assert out == tmp_path / "results" / "s" / "claims.md"
    # BWT = −AA/10: differences −1.0, −0.8 → mean −0.9, s = 0.141, t(0.975, 1) = 12.706 → ±1.27
    assert "| P | claim 0 | new − ref, BWT (s) | 2 | -0.9 [-2.2, +0.4] | not resolved |" in readme.read_text()


def test_claims_read_only_the_rows_of_the_published_table(tmp_path):
    pub = _load()
    _publish_runs(tmp_path, "s", "ref", [40.0, 46.0, 50.0])
    _publish_runs(tmp_path, "s", "new", [50.0, 54.0, 59.0])
    _, claims = pub.load_claims(
        _claims(tmp_path, [{"kind": "paired", "method": "new", "reference": "ref", "metric": "aa", "expect": "higher"}])
    )
    assert pub.evaluate(claims[0], "s", tmp_path)["n"] == 3  # no suite.json: every run folder counts
    table = {"rows": [{"label": "ref"}, {"label": "other"}]}  # published with `only=[ref,other]`
    (tmp_path / "results" / "s" / "suite.json").write_text(json.dumps(table), encoding="utf-8")
    row = pub.evaluate(claims[0], "s", tmp_path)
    assert (row["n"], row["verdict"]) == (0, "not measured")
