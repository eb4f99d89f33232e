"""The command line: errors are one line naming the value and the fix; ls lists registries."""

from __future__ import annotations

import yaml

from clift.cli import main


def _write(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_validate_reports_unknown_keys(tmp_path, capsys):
    code = main(["validate", _write(tmp_path, {"model": "tiny-llama", "trian": {"lr": 1}})])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("clift: error: unknown key 'trian'. Did you mean 'train'?")
    assert "Traceback" not in err


def test_run_reports_unknown_method(tmp_path, capsys):
    code = main(["run", _write(tmp_path, {"method": "olroa"})])
    assert code == 2
    assert "unknown method 'olroa'" in capsys.readouterr().err


def test_bad_override(tmp_path, capsys):
    code = main(["validate", _write(tmp_path, {}), "train.lr"])
    assert code == 2 and "has no '='" in capsys.readouterr().err


def test_ls_methods_and_models(capsys):
    assert main(["ls", "methods", "-v"]) == 0
    out = capsys.readouterr().out
    for name in ("seq_ft", "seq_lora", "per_task", "mtl"):
        assert name in out
    assert "[needs task id]" in out and "r = 8" in out
    assert main(["ls", "models"]) == 0
    out = capsys.readouterr().out
    assert "tiny-llama" in out and "smollm2-135m" in out
