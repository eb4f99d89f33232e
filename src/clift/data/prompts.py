"""Prompt templates: how a (task, input, target) triple becomes the text a model is trained on.

``data.prompt`` chooses one:

* ``olora`` (default): the O-LoRA / DEAL / GORP format of protocol.md §1,
  ``Task:{family}\\nDataset:{name}\\n{instruction}Option: {labels} \\n{input}\\nAnswer:`` with the target
  after a space (causal LMs) — exactly what clift has always produced.
* ``chat``: the tokenizer's chat template. The instruction, the option line and the input are the
  user turn; the target is the assistant turn (its content and the template's end-of-turn text); the
  loss is on the assistant tokens only. For instruct models (SmolLM2-Instruct, Llama-3-Instruct).
* a format string with ``{input}`` once and any of ``{instruction}``, ``{options}`` (the label list,
  empty for free-form tasks), ``{name}``, ``{family}``, e.g. ``"{instruction}{input}\\nAnswer:"``; the
  target follows as in ``olora``.

Every template renders a prompt as ``(head, input, tail)`` so that only the input is ever truncated.
"""

from __future__ import annotations

import string
from typing import Any

from clift.data.task import Task, prompt_parts
from clift.errors import ConfigError

PROMPTS = ("olora", "chat")
FORMAT_FIELDS = ("instruction", "input", "options", "name", "family")
# stands in for the input (and the target) while a chat template is rendered, then split on
_INPUT = "\x00clift-input\x00"
_TARGET = "\x00clift-target\x00"


def check_prompt(value: Any) -> list[str]:
    """Problems with a ``data.prompt`` value (empty when it is fine)."""
    if not isinstance(value, str) or not value:
        return [f"data.prompt must be 'olora', 'chat' or a format string with {{input}}, got {value!r}."]
    if value in PROMPTS:
        return []
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as err:
        return [f"data.prompt {value!r} is not a valid format string ({err}); write braces as {{{{ and }}}}."]
    unknown = sorted({f for f in fields if f not in FORMAT_FIELDS})
    problems = []
    if unknown:
        problems.append(
            f"data.prompt uses unknown field(s) {unknown}; allowed: {', '.join('{' + f + '}' for f in FORMAT_FIELDS)}."
        )
    if fields.count("input") != 1:
        problems.append(
            f"data.prompt must contain {{input}} exactly once (it is where the example goes), got {value!r}; "
            "or use 'olora' or 'chat'."
        )
    return problems


def option_line(task: Task) -> str:
    """``Option: a, b \\n`` when the task shows its options, else ``""`` (as in the O-LoRA prompt)."""
    return f"Option: {', '.join(task.labels)} \n" if task.show_options and task.labels else ""


class PromptTemplate:
    """The ``olora`` template; subclasses change the rendering.

    Attributes:
        name: the ``data.prompt`` value.
        add_specials: wrap the prompt in the tokenizer's own special tokens (bos for LLaMA, eos for T5);
            a chat template writes its own.
        target_space: put a space before the target (causal LMs, after ``Answer:``).
        stop_text: text that ends an answer besides eos (a chat template's end of turn), or ``""``.
    """

    name = "olora"
    add_specials = True
    target_space = True
    stop_text = ""

    def parts(self, task: Task, sentence: str) -> tuple[str, str, str]:
        """``(head, input, tail)``; the prompt is their concatenation."""
        return prompt_parts(task, sentence)

    def target(self, answer: str, kind: str) -> str:
        """The target text (eos is added by the encoder)."""
        return f" {answer}" if kind == "causal" and self.target_space else answer

    def clean(self, generated: str) -> str:
        """A generated answer cut at :attr:`stop_text` (text after the end of turn is not the answer)."""
        return generated.split(self.stop_text)[0] if self.stop_text else generated


class FormatTemplate(PromptTemplate):
    """A user format string (see the module docstring)."""

    def __init__(self, fmt: str) -> None:
        problems = check_prompt(fmt)
        if problems:
            raise ConfigError(problems)
        self.name = fmt
        self._head, _, self._tail = fmt.partition("{input}")

    def parts(self, task: Task, sentence: str) -> tuple[str, str, str]:
        values = {
            "instruction": task.instruction,
            "options": ", ".join(task.labels) if task.show_options else "",
            "name": task.name,
            "family": task.family,
        }
        return self._head.format(**values), sentence, self._tail.format(**values)


class ChatTemplate(PromptTemplate):
    """The tokenizer's chat template: user turn = instruction + options + input, assistant turn = target."""

    name = "chat"
    add_specials = False
    target_space = False

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ConfigError(
                f"data.prompt=chat needs a tokenizer with a chat template, and {name!r} has none; use an "
                "instruct model (e.g. HuggingFaceTB/SmolLM2-135M-Instruct), set tokenizer.chat_template, or "
                "use data.prompt=olora or a format string."
            )
        self.tok = tokenizer
        self._cache: dict[str, tuple[str, str]] = {}
        prompt = self._render(_INPUT, None)
        full = self._render(_INPUT, _TARGET)
        if not full.startswith(prompt) or _TARGET not in full:
            raise ConfigError(
                "the tokenizer's chat template does not render the assistant turn after the generation prompt, "
                "so the target cannot be separated; use data.prompt=olora or a format string."
            )
        self._before, _, after = full[len(prompt) :].partition(_TARGET)
        self.stop_text = after.strip()

    def _render(self, user: str, assistant: str | None) -> str:
        messages = [{"role": "user", "content": user}]
        if assistant is not None:
            messages.append({"role": "assistant", "content": assistant})
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=assistant is None)

    def parts(self, task: Task, sentence: str) -> tuple[str, str, str]:
        user_head = f"{task.instruction}{option_line(task)}"
        if user_head not in self._cache:
            head, _, tail = self._render(f"{user_head}{_INPUT}", None).partition(_INPUT)
            self._cache[user_head] = (head, tail)
        head, tail = self._cache[user_head]
        return head, sentence, tail

    def target(self, answer: str, kind: str) -> str:
        return f"{self._before}{answer}{self.stop_text}"


def make_template(prompt: str, tokenizer: Any) -> PromptTemplate:
    """The template for a ``data.prompt`` value.

    Raises:
        ConfigError: for an invalid format string, or ``chat`` with a tokenizer that has no chat template.
    """
    if prompt == "olora":
        return PromptTemplate()
    if prompt == "chat":
        return ChatTemplate(tokenizer)
    return FormatTemplate(prompt)
