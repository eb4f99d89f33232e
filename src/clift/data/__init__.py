"""Tasks, streams, prompts, collators and benchmark loading."""

from clift.data.task import SPLITS, Example, Stream, Task, format_prompt, normalize_answer, subsample

__all__ = ["SPLITS", "Example", "Stream", "Task", "format_prompt", "normalize_answer", "subsample"]
