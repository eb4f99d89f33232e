"""Train the small byte-level BPE tokenizer that the tiny test models use (run once, output committed).

The tokenizer covers any text (byte-level), so tiny models can run on every benchmark offline; it is
trained on the fixture stream, the prompt instructions and label names so that prompts stay short.

    python scripts/build_tiny_tokenizer.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "clift" / "assets" / "tiny-tokenizer"
SPECIALS = ["<pad>", "</s>", "<s>", "<unk>"]

INSTRUCTIONS = [
    "Task:SC\nDataset:\nWhat is the sentiment of the following paragraph? Choose one from the option.\n",
    "Task:TC\nWhat is the topic of the following paragraph? Choose one from the option.\n",
    'Task:NLI\nWhat is the logical relationship between the "sentence 1" and the "sentence 2"? '
    "Choose one from the option.\n",
    'Whether the "first sentence" and the "second sentence" have the same meaning? Choose one from the option.\n',
    "According to the following passage, is the question true or false? Choose one from the option.\n",
    "Option: \nAnswer:\nTitle: \nText: \nsentence 1: \nsentence 2: \n",
]
LABELS = [
    "World",
    "Sports",
    "Business",
    "Science or Technology",
    "Company",
    "Educational Institution",
    "Artist",
    "Athlete",
    "Office Holder",
    "Mean of Transportation",
    "Building",
    "Natural Place",
    "Village",
    "Animal",
    "Plant",
    "Album",
    "Film",
    "Written Work",
    "very negative",
    "negative",
    "neutral",
    "positive",
    "very positive",
    "entailment",
    "contradiction",
    "True",
    "False",
    "Good",
    "Bad",
    "Science",
]


def corpus() -> list[str]:
    texts = list(INSTRUCTIONS) * 20 + [" " + lab for lab in LABELS] * 20
    for path in sorted((ROOT / "src" / "clift" / "data" / "fixtures").rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, list):
            texts += [row["sentence"] if isinstance(row, dict) else str(row) for row in data]
    return texts


def main() -> None:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        unk_token="<unk>",
        model_max_length=2048,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(OUT))
    print(f"vocab {len(fast)} → {OUT}")


if __name__ == "__main__":
    main()
