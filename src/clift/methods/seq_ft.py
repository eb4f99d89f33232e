"""SeqFT: full fine-tuning of every weight, task after task (the forgetting lower bound)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from clift.methods.base import ContinualMethod, MethodConfig


@dataclass
class SeqFTConfig(MethodConfig):
    """Sequential full fine-tuning.

    Attributes:
        train_embeddings: also train the (input and tied output) embeddings. Default true, as plain
            fine-tuning does; false keeps the vocabulary matrix frozen, which saves optimizer memory.
    """

    train_embeddings: bool = field(default=True, metadata={"help": "train the embedding matrices too"})


class SeqFT(ContinualMethod):
    """Every parameter trains on every task in turn; nothing protects earlier tasks.

    Nothing is saved per task (a full model per task is large); ``clift export`` writes the final model.
    """

    config_cls = SeqFTConfig
    summary = "full fine-tuning, task after task (lower bound)"

    def attach(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        if not self.config.train_embeddings:
            for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
                if emb is not None:
                    for p in emb.parameters():
                        p.requires_grad_(False)
        return model
