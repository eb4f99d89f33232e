"""``clift prompt``: show the rendered training and evaluation prompts of a configuration.

For each task (or ``--task``) the first ``--n`` training and test examples are rendered with the run's
prompt template and tokenizer, exactly as the collators build them, with their token counts and the
loss mask: the tokens the loss is computed on are listed, everything else is masked.
"""

from __future__ import annotations

from typing import Any

from clift.errors import ConfigError


def _show_tokens(tok: Any, ids: list[int]) -> str:
    return " ".join(repr(tok.decode([i])) for i in ids)


def render_prompts(config: Any, overrides: Any = (), task: str | None = None, n: int = 3) -> str:
    """The text ``clift prompt`` prints.

    Args:
        config: a config path (or None for the defaults), mapping or :class:`~clift.config.RunConfig`.
        overrides: ``dotted.key=value`` strings.
        task: only this task (default: every task of the stream).
        n: examples per task and split.

    Raises:
        ConfigError: for an unknown task name.
    """
    from clift.data.collate import IGNORE_INDEX, PromptEncoder, TrainCollator
    from clift.data.prompts import make_template
    from clift.data.stream import load_stream
    from clift.models import load_model
    from clift.runner import _resolve_config

    cfg = _resolve_config(config if config is not None else {}, overrides)
    stream = load_stream(cfg.data, cfg.data_seed)
    if task is not None and task not in stream.task_names:
        raise ConfigError(f"--task {task!r} is not in the stream; its tasks are {', '.join(stream.task_names)}.")
    loaded = load_model(cfg.model)
    tok, kind = loaded.tokenizer, loaded.kind
    enc = PromptEncoder(
        tok, kind, cfg.data.max_source_length, cfg.data.max_target_length, make_template(cfg.data.prompt, tok)
    )
    collate = TrainCollator(enc)
    out = [f"prompt template: {cfg.data.prompt!r}   model: {cfg.model.name} ({kind})   stream: {stream.name}"]
    for t in stream:
        if task is not None and t.name != task:
            continue
        metric = t.score_metric
        out.append(f"\n=== task {t.name} ({'free-form' if t.free_form else 'labels'}, metric {metric}) ===")
        for ex in t.train[:n]:
            batch = collate([(t, ex)])
            ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
            scored = [i for i, lab in zip(ids, labels, strict=False) if lab != IGNORE_INDEX]
            if kind == "seq2seq":
                scored = [lab for lab in labels if lab != IGNORE_INDEX]
            prompt = enc.prompt_ids(t, ex.sentence)
            out.append(f"--- train {ex.id}: {len(prompt)} prompt tokens (masked) + {len(scored)} target tokens (loss)")
            out.append(tok.decode(prompt))
            out.append(f">>> loss on: {_show_tokens(tok, scored)}")
        for ex in t.test[:n]:
            prompt = enc.prompt_ids(t, ex.sentence)
            out.append(f"--- eval {ex.id}: {len(prompt)} prompt tokens; expected answer {ex.label!r}")
            out.append(tok.decode(prompt))
    return "\n".join(out)
