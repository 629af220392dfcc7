"""Where activations live: the one place TransformerLens hook names are spelled out."""

from __future__ import annotations

from typing import Callable, Iterable

from ..errors import InputError

Hook = tuple[str, Callable]  # (hook name, fn(tensor, hook) -> tensor | None)

# site -> hook point inside block l. "mlp" / "attn" are the XTransplant names of the two outputs.
SITES: dict[str, str] = {
    "resid_pre": "hook_resid_pre",
    "resid_post": "hook_resid_post",
    "mlp_out": "hook_mlp_out",
    "attn_out": "hook_attn_out",
    "mlp": "hook_mlp_out",
    "attn": "hook_attn_out",
    "z": "attn.hook_z",
    "pattern": "attn.hook_pattern",
    "attn_scores": "attn.hook_attn_scores",
}


def check_site(site: str, allowed: Iterable[str] | None = None) -> str:
    allowed = tuple(SITES) if allowed is None else tuple(allowed)
    if site not in allowed:
        raise InputError(f"Unknown site {site!r}; choose one of {', '.join(allowed)}.")
    return site


def hook_name(layer: int, site: str) -> str:
    """`blocks.{layer}.{hook}` for a site of `SITES`, e.g. hook_name(3, "resid_post")."""
    return f"blocks.{int(layer)}.{SITES[check_site(site)]}"


def block_of(name: str) -> int | None:
    """The layer a hook name belongs to (None for hooks outside the blocks)."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def resid_names(handle, layers: Iterable[int] | None = None) -> list[str]:
    from .inputs import check_layer

    layers = range(handle.n_layers) if layers is None else layers
    return [hook_name(check_layer(handle, layer), "resid_post") for layer in layers]
