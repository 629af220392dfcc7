"""CC-Tuning (arXiv 2506.00875): a cross-lingual connection learned during multilingual SFT.

One training step, per sample (a non-English prompt + response, and the English version of the
prompt):
1. forward the English prompt alone, WITH gradients, and read every layer's FFN output
   v_l = `blocks.{l}.hook_mlp_out` at the tag position (the last prompt token);
2. the Decision Maker (a bias-free linear map d_model -> n_layers) reads mean_l(v_l + e_tag),
   e_tag being the input embedding of the non-English tag token (what the embedding module
   emits, so Gemma's sqrt(d_model) scale included), and picks one source layer with a hard
   Gumbel-softmax (tau = 1): s is one-hot in the forward pass, soft in the backward pass;
3. the non-English sample runs teacher-forced with sum_l s_l * v_l added to the residual stream
   after layer 0 (`blocks.1.hook_resid_pre`) at its tag position; the loss is plain cross-entropy
   on the response. There is no auxiliary loss.

After training, `trainers.methods.cc_tuning.transform_matrix` fits the matrix that maps non-English FFN outputs to
English ones, and `trainers.methods.cc_tuning.inference` runs the model on a monolingual prompt with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from workbench import engine
from workbench.errors import InputError
from workbench.models import ModelHandle

from trainers.data import encode_pair, pad_batch, pad_id
from trainers.methods.sft import response_cross_entropy

INJECT_HOOK = engine.hook_name(1, "resid_pre")
DECISION_KEY = "decision_maker.weight"


def mlp_out_names(n_layers: int) -> list[str]:
    return [engine.hook_name(layer, "mlp_out") for layer in range(n_layers)]


def check_model(handle: ModelHandle) -> None:
    """CC-Tuning injects after layer 0, so the model needs a layer 1."""
    if handle.n_layers < 2:
        raise InputError(f"CC-Tuning injects after layer 0, so it needs at least 2 layers; {handle.facts.spec} has "
                         f"{handle.n_layers}.")


def tag_positions(ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  pad_token: int | None = None) -> torch.Tensor:
    """Index of each row's last real token (the tag): the last position the attention mask keeps,
    or, without a mask, the last token that is not padding (a prompt never ends in padding)."""
    if attention_mask is not None:
        keep = attention_mask.bool()
    elif pad_token is not None:
        keep = ids != pad_token
    else:
        keep = torch.ones_like(ids, dtype=torch.bool)
    if not bool(keep.any(-1).all()):
        raise InputError("A prompt in the batch has no tokens.")
    positions = torch.arange(ids.shape[-1], device=ids.device).expand_as(ids)
    return torch.where(keep, positions, -1).amax(-1)


def tag_mlp_outputs(handle: ModelHandle, ids: torch.Tensor, tags: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, n_layers, d_model): every layer's `hook_mlp_out` at each row's tag position.

    Gradients flow when grad mode is on (the English pass of training); no unembedding is run.
    """
    names = mlp_out_names(handle.n_layers)
    return engine.capture(handle, ids, names, at=tags, attention_mask=attention_mask,
                          grad=torch.is_grad_enabled()).stack(names, dim=1)


class DecisionMaker(torch.nn.Module):
    """Chooses, per sample, which layer's English FFN output is connected to the non-English pass."""

    def __init__(self, d_model: int, n_layers: int):
        super().__init__()
        self.proj = torch.nn.Linear(d_model, n_layers, bias=False)

    def logits(self, vectors: torch.Tensor, e_tag: torch.Tensor) -> torch.Tensor:
        """Scores of the source layers from mean_l(v_l + e_tag); vectors (B, L, d), e_tag (B, d)."""
        return self.proj((vectors + e_tag[:, None, :]).mean(dim=1))

    def forward(self, vectors: torch.Tensor, e_tag: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """One-hot choice (B, L): a hard Gumbel-softmax sample (tau = 1; training), or the argmax."""
        logits = self.logits(vectors, e_tag)
        if sample:
            return F.gumbel_softmax(logits, tau=1.0, hard=True)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


def connection(vectors: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """sum_l s_l * v_l: (B, L, d) x (B, L) -> (B, d)."""
    return (choice[..., None] * vectors).sum(dim=1)


def add_at_tags(tensor: torch.Tensor, tags: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """`tensor` (B, T, d) with `delta[r]` added at row r's tag position (out of place, so autograd
    sees it); every other position is returned unchanged."""
    rows = torch.arange(delta.shape[0], device=tensor.device)
    return tensor.index_put((rows, tags.to(tensor.device)), delta.to(tensor.device, tensor.dtype), accumulate=True)


def injection_hook(tags: torch.Tensor, delta: torch.Tensor) -> engine.Hook:
    """Hook adding `delta[r]` to the residual stream entering layer 1 at row r's tag position."""
    return INJECT_HOOK, lambda tensor, hook: add_at_tags(tensor, tags, delta)


def tag_embeddings(handle: ModelHandle, ids: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """e_tag: the input embedding module's output for each row's tag token, (B, d_model)."""
    tag_ids = ids[torch.arange(ids.shape[0], device=ids.device), tags]
    return handle.hf_model.get_input_embeddings()(tag_ids[:, None])[:, 0]


def decision_maker_for(handle: ModelHandle) -> DecisionMaker:
    """A fresh Decision Maker on the model's device and dtype."""
    param = next(handle.hf_model.parameters())
    return DecisionMaker(handle.facts.d_model, handle.n_layers).to(device=param.device, dtype=param.dtype)


def read_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """What a CC-Tuning checkpoint saved next to its weights (`method_state`: the Decision Maker)."""
    from trainers.state import METHOD_TENSORS, load_method_state

    path = Path(folder) / METHOD_TENSORS
    if not path.exists():
        raise InputError(f"{folder} has no {METHOD_TENSORS}: it is not a CC-Tuning checkpoint.")
    state = load_method_state(folder)
    if DECISION_KEY not in state:
        raise InputError(f"{path} holds no Decision Maker ({DECISION_KEY}): it is not a CC-Tuning checkpoint.")
    return state


def load_decision_maker(handle: ModelHandle, state: dict[str, torch.Tensor]) -> DecisionMaker:
    """A Decision Maker with the saved weights; checks they fit the model."""
    weight = state[DECISION_KEY]
    if tuple(weight.shape) != (handle.n_layers, handle.facts.d_model):
        raise InputError(f"The saved Decision Maker is {tuple(weight.shape)}, but {handle.facts.spec} needs "
                         f"({handle.n_layers}, {handle.facts.d_model}): the checkpoint belongs to another model.")
    dm = decision_maker_for(handle)
    with torch.no_grad():
        dm.proj.weight.copy_(weight)
    return dm.eval()


def encode_prompt(tokenizer, prompt: str, max_length: int) -> list[int]:
    """The prompt's ids exactly as `encode_pair` puts them in front of a response (BOS, text,
    newline), so the tag token is the same in training, in the Transform Matrix and at inference."""
    ids, n_prompt = encode_pair(tokenizer, prompt, "", max_length)
    return ids[:n_prompt]


class CCTuning:
    """The CC-Tuning training method (see the module docstring). The Decision Maker samples its
    choice (Gumbel) in training mode and takes the argmax in eval mode (evaluation passes)."""

    name = "cc-tuning"
    required_fields = ("instruction", "output", "instruction_en")

    def __init__(self):
        self.decision_maker: DecisionMaker | None = None

    def setup(self, handle: ModelHandle, config, accelerator) -> list[torch.nn.Module]:
        check_model(handle)
        self.decision_maker = decision_maker_for(handle)
        return [self.decision_maker]

    def collate(self, records: list[dict], tokenizer, config) -> dict[str, torch.Tensor]:
        pad = pad_id(tokenizer)
        pairs = [encode_pair(tokenizer, r["instruction"], r["output"], config.max_length) for r in records]
        batch = pad_batch([ids for ids, _ in pairs], [n for _, n in pairs], pad)
        batch["tag"] = torch.tensor([n - 1 for _, n in pairs])
        english = [encode_prompt(tokenizer, r["instruction_en"], config.max_length) for r in records]
        en = pad_batch(english, [len(ids) for ids in english], pad)
        batch["en_input_ids"], batch["en_attention_mask"] = en["input_ids"], en["attention_mask"]
        batch["en_tag"] = torch.tensor([len(ids) - 1 for ids in english])
        return batch

    def loss(self, handle: ModelHandle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.decision_maker is None:
            raise RuntimeError("CCTuning.setup() must run before loss().")
        english = tag_mlp_outputs(handle, batch["en_input_ids"], batch["en_tag"], batch["en_attention_mask"])
        e_tag = tag_embeddings(handle, batch["input_ids"], batch["tag"])
        choice = self.decision_maker(english, e_tag, sample=self.decision_maker.training)
        logits = engine.forward(handle, batch["input_ids"], [injection_hook(batch["tag"], connection(english, choice))],
                                attention_mask=batch["attention_mask"], grad=True)
        loss = response_cross_entropy(logits, batch["labels"])
        return loss, {"ce": loss.item()}

    def extra_files(self) -> dict[str, Any]:
        weight = self.decision_maker.proj.weight
        return {DECISION_KEY: weight,
                "cc_tuning": {"source_hook": "blocks.{l}.hook_mlp_out", "inject_hook": INJECT_HOOK,
                              "n_layers": int(weight.shape[0]), "d_model": int(weight.shape[1]),
                              "prompt_format": "BOS + instruction + newline; the tag is the newline token"}}

    def load_extra(self, folder) -> None:
        state = read_state(folder)
        with torch.no_grad():
            self.decision_maker.proj.weight.copy_(state[DECISION_KEY])
