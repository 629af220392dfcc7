"""Entity-level unlearning baselines (arXiv 2406.15796): GA, GD, KL, IDK, DPO, NPO and NPO-GD.

Every method starts from the model that learned the entities (the "injected" model,
`config.base_model`) and trains on records that pair one forget QA pair with one retain QA pair
and one "I don't know" answer (`build_unlearning_records` in `trainers.methods.unlearning.pipeline`):
`instruction`, `output` (forget), `idk`, `retain_instruction`, `retain_output`.

Losses, with NLL(S) the mean negative log-likelihood over the answer tokens of a batch (as a
Hugging Face model's loss) and log pi(y|x) the summed log-probability of a whole answer:

- GA  = -NLL(forget)
- GD  = -NLL(forget) + NLL(retain)
- KL  = -NLL(forget) + KL(p_ref || p_theta) on retain, the KL divergence of the next-token
  distributions summed over the vocabulary and averaged over the retain answer tokens
- IDK = NLL(idk answer | forget question) + NLL(retain)
- DPO = -mean log sigmoid(beta [(log pi(idk) - log pi(forget)) - (log pi_ref(idk) - log pi_ref(forget))])
- NPO = (2 / beta) mean log(1 + (pi_theta(forget) / pi_ref(forget))^beta)
      = (2 / beta) mean softplus(beta (log pi_theta(forget) - log pi_ref(forget)))
- NPO-GD = NPO + NLL(retain)

beta = 0.1 by default. The reference model pi_ref is a second, frozen copy of the injected model
(`requires_grad` off, eval mode); it is a method attribute, not a module of the training
container, so the loop neither optimises nor saves it.

Logits are computed only where a loss reads them (answer tokens): the unembedding of a 262k-token
vocabulary costs several times the rest of the forward pass of a small model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trainers.data import encode_pair, pad_batch, pad_id
from workbench import engine
from workbench.models import ModelHandle

FORGET_FIELDS = ("instruction", "output")
RETAIN_FIELDS = ("retain_instruction", "retain_output")
IDK_FIELD = "idk"


# ---------------------------------------------------------------------- log-probabilities

@dataclass
class AnswerScores:
    """Per-token log-probabilities of the labelled tokens of a batch.

    `token_logprobs` and `mask` are (B, T-1): position t scores token t+1. `logits` holds the
    (soft-capped) logits of the masked positions only, in row-major order, when asked for.
    """

    token_logprobs: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor | None = None

    @property
    def sequence_logprobs(self) -> torch.Tensor:
        """log pi(y|x) per row: the sum over the row's answer tokens."""
        return (self.token_logprobs * self.mask).sum(-1)

    @property
    def nll(self) -> torch.Tensor:
        """Mean negative log-likelihood over all answer tokens of the batch."""
        return -(self.token_logprobs * self.mask).sum() / self.mask.sum().clamp(min=1)


def answer_scores(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  labels: torch.Tensor, keep_logits: bool = False) -> AnswerScores:
    """Score the tokens whose label is not -100 (only the positions that predict them are
    unembedded); gradients flow when grad mode is on. Equal to `log_softmax(model(input_ids).logits)`
    gathered at the labels (tested)."""
    token_logprobs, mask, logits = engine.label_logprobs(handle, input_ids, labels, attention_mask,
                                                         grad=torch.is_grad_enabled(), keep_logits=keep_logits)
    return AnswerScores(token_logprobs, mask, logits)


# ---------------------------------------------------------------------- the losses (pure)

def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(p_ref || p_theta) = sum_v p_ref (log p_ref - log p_theta)."""
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()


def dpo_loss(idk: torch.Tensor, forget: torch.Tensor, ref_idk: torch.Tensor, ref_forget: torch.Tensor,
             beta: float) -> torch.Tensor:
    """-mean log sigmoid(beta [(idk - forget) - (ref_idk - ref_forget)]) on sequence log-probs."""
    return -F.logsigmoid(beta * ((idk - forget) - (ref_idk - ref_forget))).mean()


def npo_loss(forget: torch.Tensor, ref_forget: torch.Tensor, beta: float) -> torch.Tensor:
    """(2 / beta) mean log(1 + (pi_theta / pi_ref)^beta), from sequence log-probs."""
    return (2.0 / beta) * F.softplus(beta * (forget - ref_forget)).mean()


# ---------------------------------------------------------------------- the reference model

def load_reference(spec: str, device: str | torch.device = "cpu") -> ModelHandle:
    """A frozen copy of `spec` (eval mode, no gradients), booted apart from the shared cache."""
    from workbench.models import boot

    handle = boot(spec, device=str(device))
    handle.hf_model.eval().requires_grad_(False)
    return handle


# ---------------------------------------------------------------------- the methods

class Unlearning:
    """Shared parts: batching of the forget / retain / idk pairs and the reference model.

    Subclasses set `name`, `parts` (which of forget, retain, idk the loss reads), `uses_reference`
    and implement `objective(scores, reference_scores) -> (loss, terms)`.
    """

    name = "unlearn"
    parts: tuple[str, ...] = ("forget",)
    uses_reference = False

    def __init__(self, beta: float = 0.1):
        if not beta > 0:
            raise ValueError(f"beta must be greater than 0 (got {beta}).")
        self.beta = float(beta)
        self.reference: ModelHandle | None = None
        fields = {"forget": FORGET_FIELDS, "retain": RETAIN_FIELDS, "idk": (FORGET_FIELDS[0], IDK_FIELD)}
        self.required_fields = tuple(dict.fromkeys(f for part in self.parts for f in fields[part]))

    def setup(self, handle, config, accelerator) -> list[torch.nn.Module]:
        if self.uses_reference:
            self.reference = load_reference(config.base_model, accelerator.device)
        return []

    def collate(self, records: list[dict], tokenizer, config) -> dict[str, torch.Tensor]:
        sources = {"forget": FORGET_FIELDS, "retain": RETAIN_FIELDS, "idk": (FORGET_FIELDS[0], IDK_FIELD)}
        batch: dict[str, torch.Tensor] = {}
        for part in self.parts:
            prompt, response = sources[part]
            pairs = [encode_pair(tokenizer, r[prompt], r[response], config.max_length) for r in records]
            padded = pad_batch([ids for ids, _ in pairs], [n for _, n in pairs], pad_id(tokenizer))
            batch.update({self._prefix(part) + key: value for key, value in padded.items()})
        return batch

    def _scores(self, handle: ModelHandle, batch: dict[str, torch.Tensor], part: str,
                keep_logits: bool = False) -> AnswerScores:
        prefix = self._prefix(part)
        return answer_scores(handle, batch[prefix + "input_ids"], batch[prefix + "attention_mask"],
                             batch[prefix + "labels"], keep_logits)

    def _prefix(self, part: str) -> str:
        """Batch keys of the first part are plain (`input_ids`, ...: what the loop counts), the
        others carry the part's name (`retain_input_ids`, ...)."""
        return "" if part == self.parts[0] else f"{part}_"

    def loss(self, handle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective(handle, batch)

    def reference_scores(self, batch: dict[str, torch.Tensor], part: str, keep_logits: bool = False) -> AnswerScores:
        if self.reference is None:
            raise RuntimeError(f"{self.name} needs its reference model: call setup() first.")
        with torch.no_grad():
            return self._scores(self.reference, batch, part, keep_logits)

    def objective(self, handle: ModelHandle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def extra_files(self) -> dict[str, Any]:
        return {}

    def load_extra(self, folder) -> None:
        return None


class GA(Unlearning):
    """Gradient ascent: -NLL(forget)."""

    name = "unlearn-ga"

    def objective(self, handle, batch):
        forget = self._scores(handle, batch, "forget").nll
        return -forget, {"forget_nll": forget.item()}


class GD(Unlearning):
    """Gradient difference: -NLL(forget) + NLL(retain)."""

    name = "unlearn-gd"
    parts = ("forget", "retain")

    def objective(self, handle, batch):
        forget = self._scores(handle, batch, "forget").nll
        retain = self._scores(handle, batch, "retain").nll
        return retain - forget, {"forget_nll": forget.item(), "retain_nll": retain.item()}


class KL(Unlearning):
    """-NLL(forget) + KL(p_ref || p_theta) on the retain answers."""

    name = "unlearn-kl"
    parts = ("forget", "retain")
    uses_reference = True

    def objective(self, handle, batch):
        forget = self._scores(handle, batch, "forget").nll
        retain = self._scores(handle, batch, "retain", keep_logits=True)
        ref = self.reference_scores(batch, "retain", keep_logits=True)
        kl = kl_divergence(ref.logits, retain.logits)
        return kl - forget, {"forget_nll": forget.item(), "retain_kl": kl.item()}


class IDK(Unlearning):
    """NLL of an "I don't know" answer to the forget question + NLL(retain)."""

    name = "unlearn-idk"
    parts = ("idk", "retain")

    def objective(self, handle, batch):
        idk = self._scores(handle, batch, "idk").nll
        retain = self._scores(handle, batch, "retain").nll
        return idk + retain, {"idk_nll": idk.item(), "retain_nll": retain.item()}


class DPO(Unlearning):
    """DPO with the idk answer preferred over the true (forget) answer, against the reference."""

    name = "unlearn-dpo"
    parts = ("forget", "idk")
    uses_reference = True

    def objective(self, handle, batch):
        forget = self._scores(handle, batch, "forget").sequence_logprobs
        idk = self._scores(handle, batch, "idk").sequence_logprobs
        ref_forget = self.reference_scores(batch, "forget").sequence_logprobs
        ref_idk = self.reference_scores(batch, "idk").sequence_logprobs
        loss = dpo_loss(idk, forget, ref_idk, ref_forget, self.beta)
        return loss, {"dpo": loss.item(), "forget_logp": forget.mean().item(), "idk_logp": idk.mean().item()}


class NPO(Unlearning):
    """Negative preference optimisation on the forget answers."""

    name = "unlearn-npo"
    uses_reference = True

    def objective(self, handle, batch):
        forget = self._scores(handle, batch, "forget").sequence_logprobs
        ref_forget = self.reference_scores(batch, "forget").sequence_logprobs
        loss = npo_loss(forget, ref_forget, self.beta)
        return loss, {"npo": loss.item(), "forget_logratio": (forget - ref_forget).mean().item()}


class NPOGD(NPO):
    """NPO + NLL(retain)."""

    name = "unlearn-npo-gd"
    parts = ("forget", "retain")

    def objective(self, handle, batch):
        npo, terms = super().objective(handle, batch)
        retain = self._scores(handle, batch, "retain").nll
        return npo + retain, {**terms, "retain_nll": retain.item()}


METHOD_CLASSES: dict[str, type[Unlearning]] = {cls.name: cls for cls in (GA, GD, KL, IDK, DPO, NPO, NPOGD)}
SHORT_NAMES: dict[str, str] = {name.removeprefix("unlearn-"): name for name in METHOD_CLASSES}
