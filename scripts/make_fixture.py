"""Build the tiny fixture stream used by tests and examples (deterministic).

Writes three small tasks in the upstream CL_Benchmark layout (``<family>/<task>/{train,test,labels}.json``)
under ``src/clift/data/fixtures/cl_fixture``. The tasks are synthetic but learnable by a tiny model
in a few dozen steps, so tests can check that training really moves accuracy.

    python scripts/make_fixture.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "clift" / "data" / "fixtures" / "cl_fixture"

NOUNS = ["film", "meal", "book", "hotel", "game", "phone", "song", "show", "car", "trip"]
POS = ["great", "lovely", "superb", "fun", "brilliant", "pleasant"]
NEG = ["awful", "boring", "terrible", "dull", "broken", "sad"]
TOPICS = {
    "Sports": (["team", "coach", "striker", "league"], ["won the final", "scored twice", "lost the match"]),
    "Business": (["market", "bank", "company", "investor"], ["raised prices", "cut jobs", "posted profits"]),
    "Science": (
        ["lab", "telescope", "chemist", "robot"],
        ["found a planet", "tested a cell", "built a sensor"],
    ),
}
DAYS = ["monday", "tuesday", "friday", "sunday", "new year", "the weekend"]
ADJ = ["local", "old", "young", "famous", "small", "rival"]
WHEN = ["every day", "at night", "on weekends", "in the morning", "after lunch"]
SUBJ = ["the cat", "a child", "the farmer", "my friend", "the pilot", "a doctor", "the cook", "her uncle"]
VERB = [
    ("runs", "does not run"),
    ("sings", "does not sing"),
    ("reads", "does not read"),
    ("swims", "does not swim"),
]


def _sentiment(rng: random.Random) -> dict:
    label = rng.choice(["positive", "negative"])
    words = POS if label == "positive" else NEG
    return {
        "sentence": f"Text: the {rng.choice(NOUNS)} was {rng.choice(words)} and {rng.choice(words)}.",
        "label": label,
    }


def _topic(rng: random.Random) -> dict:
    label = rng.choice(sorted(TOPICS))
    subjects, events = TOPICS[label]
    s, e = rng.choice(subjects), rng.choice(events)
    day, adj = rng.choice(DAYS), rng.choice(ADJ)
    return {"sentence": f"Title: the {s} {e}\nText: on {day} the {adj} {s} {e}.\n", "label": label}


def _nli(rng: random.Random) -> dict:
    label = rng.choice(["entailment", "contradiction"])
    subj = rng.choice(SUBJ)
    yes, no = rng.choice(VERB)
    second = yes if label == "entailment" else no
    when = rng.choice(WHEN)
    return {"sentence": f"sentence 1: {subj} {yes} {when}.\nsentence 2: {subj} {second}.", "label": label}


TASKS = [
    ("SC", "toysent", ["positive", "negative"], _sentiment),
    ("TC", "toytopic", ["Sports", "Business", "Science"], _topic),
    ("NLI", "toynli", ["entailment", "contradiction"], _nli),
]


def main() -> None:
    for family, name, labels, make in TASKS:
        rng = random.Random(f"fixture:{name}")
        folder = OUT / family / name
        folder.mkdir(parents=True, exist_ok=True)
        rows: list[dict] = []
        seen: set[str] = set()
        while len(rows) < 160:  # unique sentences, so train and test never overlap
            row = make(rng)
            if row["sentence"] not in seen:
                seen.add(row["sentence"])
                rows.append(row)
        # the upstream files have no ids; keep the same shape
        (folder / "train.json").write_text(json.dumps(rows[:112], indent=1) + "\n")
        (folder / "test.json").write_text(json.dumps(rows[112:], indent=1) + "\n")
        (folder / "labels.json").write_text(json.dumps(labels) + "\n")
    print(f"wrote {len(TASKS)} tasks under {OUT}")


if __name__ == "__main__":
    main()
