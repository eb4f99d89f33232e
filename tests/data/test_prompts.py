"""The O-LoRA prompt format, answer normalisation and deterministic subsets."""

from clift.data.task import Example, Task, format_prompt, normalize_answer, subsample

AGNEWS = Task(
    "agnews",
    "TC",
    "What is the topic of the following paragraph? Choose one from the option.\n",
    ("World", "Sports", "Business", "Science or Technology"),
)
COPA = Task("COPA", "COPA", "", ("A", "B"), show_options=False)


def test_prompt_matches_olora_format_exactly():
    got = format_prompt(AGNEWS, "Title: x\nText: y\n")
    assert got == (
        "Task:TC\nDataset:agnews\nWhat is the topic of the following paragraph? Choose one from the option.\n"
        "Option: World, Sports, Business, Science or Technology \nTitle: x\nText: y\n\nAnswer:"
    )


def test_copa_has_no_instruction_and_no_option_line():
    assert format_prompt(COPA, "Which is the cause? A: a B: b") == (
        "Task:COPA\nDataset:COPA\nWhich is the cause? A: a B: b\nAnswer:"
    )


def test_normalize_answer():
    assert normalize_answer("  Science or Technology. ") == "science or technology"
    assert normalize_answer("very\n negative!") == "very negative"
    assert normalize_answer("A") == "a"  # articles are kept: COPA answers stay valid


def _pool(n_per_label=50):
    return [Example(f"s{lab}{i}", lab, f"{lab}{i}") for lab in ("a", "b", "c") for i in range(n_per_label)]


def test_subsample_is_deterministic_and_balanced():
    pool = _pool()
    one = subsample(pool, 30, seed=1, key="t/train")
    two = subsample(pool, 30, seed=1, key="t/train")
    assert one == two
    assert {lab: sum(e.label == lab for e in one) for lab in "abc"} == {"a": 10, "b": 10, "c": 10}
    assert subsample(pool, 30, seed=2, key="t/train") != one
    assert subsample(pool, 30, seed=1, key="u/train") != one


def test_subsample_all_and_unbalanced_pools():
    pool = _pool(5) + [Example(f"x{i}", "d", f"d{i}") for i in range(40)]
    out = subsample(pool, 20, seed=0, key="k")
    assert sum(e.label == "d" for e in out) == 5  # 5 per label, every class covered
    assert len(subsample(pool, None, seed=0, key="k")) == len(pool)
    assert len(subsample(pool, 10_000, seed=0, key="k")) == len(pool)
