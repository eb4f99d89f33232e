"""Read the DEAL and GORP papers' claims against our published runs: supported, contradicted or not resolved.

Each claim in the claims file (``docs/paper-claims.yaml``) names how our setting measures it, as one of:

* ``paired``: ``method − reference`` on ``metric`` (aa, bwt, fwt, forgetting), paired over the same
  (order, seed) in a published suite's runs (``results/<suite>/runs``: the file's ``suite:``, or
  ``--suite``, unless the test names its own ``suite``, as a budget sweep's does; only the rows of that
  suite's published ``suite.json`` table are read); the paper claims it is positive
  (``expect: higher``) or negative (``expect: lower``);
* ``within``: the same paired difference, claimed to be no worse than ``-margin`` (``method`` is at most
  ``margin`` points below ``reference``);
* ``step_cost``: the per-step time ratio ``method / reference`` of a ``benchmarks/step_cost.py`` JSON
  file, claimed to be at most ``at_most``.

Verdict, from the 95 % interval only: *supported* when the whole interval lies on the claimed side,
*contradicted* when it lies wholly on the other side, *not resolved* when it straddles the bound (or there is
one pair, hence no interval), *not measured* when the runs are not published yet. Nothing is computed that
the committed files do not hold, so the table regenerates byte-identically.

    python scripts/paper_claims.py docs/paper-claims.yaml                          # the file's suite (learnable)
    python scripts/paper_claims.py docs/paper-claims.yaml --suite standard-proxy   # the same claims on another

Writes ``results/<suite>/claims.md`` and the README's ``<!-- claims:<suite> -->`` block.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from clift.errors import ConfigError
from clift.io import atomic_write_text, read_json, replace_marked_block
from clift.results import read_record
from clift.stats import paired_differences, ratio_of_means
from clift.suite import SUITE_JSON
from clift.suite.aggregation import pair_key

ROOT = Path(__file__).resolve().parents[1]
KINDS = {
    "paired": ("method", "reference", "metric", "expect"),
    "within": ("method", "reference", "metric", "margin"),
    "step_cost": ("file", "method", "reference", "at_most"),
}
METRICS = ("aa", "bwt", "fwt", "forgetting")
MARKER = "claims"


def load_claims(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """The default suite and the claims of ``path``, each checked for its kind's keys.

    Raises:
        ConfigError: naming every claim with a missing key, an unknown kind, metric or ``expect``.
    """
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    claims = raw.get("claims") if isinstance(raw, dict) else None
    if not isinstance(claims, list) or not claims or not isinstance(raw.get("suite"), str):
        raise ConfigError(f"{path}: expected a mapping with 'suite: <published suite>' and a non-empty 'claims:' list.")
    problems = []
    for i, claim in enumerate(claims):
        test = claim.get("test") if isinstance(claim, dict) else None
        where = f"{path}: claims[{i}]"
        if not isinstance(test, dict) or test.get("kind") not in KINDS:
            problems.append(f"{where}: 'test.kind' must be one of {', '.join(KINDS)}; got {test!r}.")
            continue
        missing = [k for k in KINDS[test["kind"]] if k not in test]
        missing += [k for k in ("paper", "claim") if k not in claim]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}.")
        if "metric" in test and test["metric"] not in METRICS:
            problems.append(f"{where}: metric {test['metric']!r}; allowed: {', '.join(METRICS)}.")
        if test["kind"] == "paired" and test.get("expect") not in ("higher", "lower"):
            problems.append(f"{where}: expect {test.get('expect')!r}; allowed: higher, lower.")
    if problems:
        raise ConfigError(problems)
    return raw["suite"], claims


def verdict(low: float | None, high: float | None, bound: float, side: str) -> str:
    """The verdict for an interval ``[low, high]`` on a claim that the value is ``side`` (``above``/``below``)
    ``bound``; ``not resolved`` without an interval."""
    if low is None or high is None:
        return "not resolved"
    if side == "above":
        return "supported" if low > bound else "contradicted" if high < bound else "not resolved"
    return "supported" if high < bound else "contradicted" if low > bound else "not resolved"


def tabulated_labels(suite_dir: Path) -> set[str] | None:
    """The row labels of the suite's published table (``suite_dir/suite.json``); None when it has none.

    A run folder of a row the table leaves out (a partial ``only=`` publish) is not read, so the claims
    draw on the same runs as the results tables.
    """
    table = suite_dir / SUITE_JSON
    if not table.is_file():
        return None
    return {str(row["label"]) for row in read_json(table)["rows"]}


def suite_metrics(
    runs_dir: Path, metric: str, labels: set[str] | None = None
) -> dict[str, dict[tuple[str, Any], float]]:
    """``{label: {(order, seed): metric}}`` of every complete run under ``runs_dir/<label>/<o…-s…>/``
    (only of ``labels``, when given)."""
    out: dict[str, dict[tuple[str, Any], float]] = {}
    for results in sorted(runs_dir.glob("*/*/results.json")):
        if labels is not None and results.parent.parent.name not in labels:
            continue
        record = read_record(results.parent)
        value = record.metrics.get(metric)
        if record.complete and value is not None:
            out.setdefault(results.parent.parent.name, {})[pair_key(record)] = float(value)
    return out


def _paired(test: Mapping[str, Any], root: Path, suite: str) -> dict[str, Any]:
    suite = str(test.get("suite", suite))
    suite_dir = root / "results" / suite
    by_label = suite_metrics(suite_dir / "runs", str(test["metric"]), tabulated_labels(suite_dir))
    diff = paired_differences(by_label.get(str(test["method"]), {}), by_label.get(str(test["reference"]), {}))
    measured = f"{test['method']} − {test['reference']}, {test['metric'].upper()} ({suite})"
    if diff is None:
        return {"measured": measured, "n": 0, "estimate": "—", "verdict": "not measured"}
    if test["kind"] == "paired":
        side, bound = ("above" if test["expect"] == "higher" else "below"), 0.0
    else:
        side, bound = "above", -float(test["margin"])
    ci = "" if diff.low is None else f" [{diff.low:+.1f}, {diff.high:+.1f}]"
    return {
        "measured": measured,
        "n": diff.n,
        "estimate": f"{diff.mean:+.1f}{ci}",
        # a zero-width interval (every pair differed alike) measures no spread: it decides nothing
        "verdict": verdict(diff.low, diff.high, bound, side) if diff.spread else "not resolved",
    }


def _step_cost(test: Mapping[str, Any], root: Path, suite: str) -> dict[str, Any]:
    path = root / str(test["file"])
    measured = f"step time {test['method']} / {test['reference']} ({test['file']})"
    if not path.is_file():
        return {"measured": measured, "n": 0, "estimate": "—", "verdict": "not measured"}
    results = json.loads(path.read_text(encoding="utf-8"))["results"]
    steps = [results[str(test[k])]["step_s_all"] for k in ("method", "reference")]
    ratio, (low, high) = ratio_of_means(*steps)
    return {
        "measured": measured,
        "n": len(steps[0]),
        "estimate": f"{ratio:.2f}× [{low:.2f}, {high:.2f}]",
        "verdict": verdict(low, high, float(test["at_most"]), "below"),
    }


def evaluate(claim: Mapping[str, Any], suite: str, root: Path = ROOT) -> dict[str, Any]:
    """One table row: the claim, how it is measured, n, the estimate with its interval, the verdict."""
    test = claim["test"]
    row = (_step_cost if test["kind"] == "step_cost" else _paired)(test, root, suite)
    return {"paper": claim["paper"], "claim": claim["claim"], "source": claim.get("source", ""), **row}


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The claims table in Markdown."""
    lines = [
        "| paper | claim | measured as | n | estimate [95 % interval] | verdict |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        claim = r["claim"] + (f" ({r['source']})" if r["source"] else "")
        lines.append(f"| {r['paper']} | {claim} | {r['measured']} | {r['n']} | {r['estimate']} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def publish(claims_file: Path, suite: str | None = None, root: Path = ROOT, readme: Path | None = None) -> Path:
    """Write ``results/<suite>/claims.md`` and the README's ``<!-- claims:<suite> -->`` block (when present)."""
    default, claims = load_claims(claims_file)
    suite = suite or default
    table = format_rows([evaluate(c, suite, root) for c in claims])
    title = f"# The DEAL and GORP papers' claims against the `{suite}` runs\n\n"
    out = atomic_write_text(root / "results" / suite / "claims.md", title + table)
    readme = readme or root / "README.md"
    text = readme.read_text(encoding="utf-8")
    marker = f"{MARKER}:{suite}"
    updated = replace_marked_block(text, marker, table)
    if updated is None:
        print(f"{readme} has no <!-- {marker} --> block; table not inserted", file=sys.stderr)
    else:
        atomic_write_text(readme, updated)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("claims", type=Path)
    parser.add_argument("--suite", help="evaluate the claims on this published suite instead of the file's")
    args = parser.parse_args()
    print(f"written {publish(args.claims, args.suite)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
