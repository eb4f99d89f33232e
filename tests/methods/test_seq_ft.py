"""seq_ft: sequential full fine-tuning of every weight."""

from __future__ import annotations

import torch

import clift

from ..conftest import fixture_stream, fresh_parameters, tiny_config


def test_seq_ft_trains_every_weight(tmp_path):
    res = clift.run(tiny_config(tmp_path, method="seq_ft", train={"lr": 1e-3}), stream=fixture_stream())
    fresh = fresh_parameters()
    changed = [n for n, p in res.model.named_parameters() if not torch.equal(p.detach().cpu(), fresh[n])]
    assert len(changed) == len(fresh)
    assert not (res.run_dir / "adapters").exists()  # nothing saved per task for full fine-tuning


def test_seq_ft_can_freeze_embeddings(tmp_path):
    res = clift.run(
        tiny_config(tmp_path, method={"name": "seq_ft", "train_embeddings": False}),
        stream=fixture_stream(names=["toysent"]),
    )
    fresh = fresh_parameters()
    emb = res.model.get_input_embeddings().weight
    assert torch.equal(emb.detach().cpu(), fresh["model.embed_tokens.weight"])
