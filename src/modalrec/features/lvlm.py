"""Vision-language model (LVLM) item representations: generate a description, embed the item.

The reference study shows a vision-language model the product image with a structured prompt and
takes one hidden state as the item embedding; what the model wrote is kept too (it becomes side
content). This module holds the generation core shared with the text-only route (``llm_text``)
and the vision-language route itself, on transformers' ``AutoProcessor`` +
``AutoModelForImageTextToText`` for any hub id or local folder (Qwen2-VL / Qwen2.5-VL, LLaVA,
Idefics3 / SmolVLM, ...).

Generation is greedy, batched with left padding, and a batch gives the same text and (up to float
rounding) the same embeddings as item-by-item runs. The hidden states come from one extra forward
pass over prompt + generated ids with the attention mask: exact, and it also yields the state at
the final end-of-sequence token, which ``generate`` itself never computes.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalrec.errors import ConfigError, DependencyError, FeatureError, ModelError
from modalrec.features.hidden_pooling import check_poolings, generated_mask, pool, select_layer
from modalrec.features.offline_weights import resolve_model_dir

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class GenerationSettings:
    """How the text is generated (always greedy, so runs are reproducible)."""

    max_new_tokens: int = 64
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be at least 1", where="--max-new-tokens")

    def to_dict(self) -> dict[str, Any]:
        return {"do_sample": False, "num_beams": 1, **asdict(self), "stop_strings": list(self.stop_strings)}


@dataclass
class ItemInput:
    """One item to describe: its id, the rendered prompt and (LVLM route) its image."""

    item_id: str
    prompt: str
    image: Any = None  # a path or a PIL image


@dataclass
class BatchResult:
    """What one batch produced: texts, generated token counts, stop flags, pooled embeddings."""

    texts: list[str]
    n_generated: np.ndarray
    stopped: np.ndarray
    pooled: dict[str, np.ndarray] = field(default_factory=dict)


# --- device, dtype ---------------------------------------------------------------------------
def resolve_device(device: str) -> Any:
    import torch

    name = (device or "cpu").strip().lower()
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA was asked for but no CUDA device is available", where="--device",
                          hint="use --device cpu, or install a CUDA build of torch on a machine with a GPU")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("MPS was asked for but is not available", where="--device", hint="use --device cpu")
    if not (name == "cpu" or name == "mps" or name.startswith("cuda")):
        raise ConfigError(f"unknown device {device!r}", where="--device", hint="use cpu, cuda, cuda:N or mps")
    return torch.device(name)


def resolve_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", where="--dtype", hint=f"use one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def check_remote_code(model_id: str, trust_remote_code: bool) -> Any:
    """Load the model's config; refuse code shipped with the model unless explicitly trusted."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code, local_files_only=True)
    except ValueError as error:
        if "trust_remote_code" in str(error) or "custom code" in str(error):
            raise ModelError(f"model {model_id!r} runs code shipped with its weights", where="--model",
                             hint="read that code, then pass --trust-remote-code to run it") from error
        raise ModelError(f"cannot read the config of {model_id!r}: {error}", where="--model") from error
    except OSError as error:
        raise DependencyError(f"model {model_id!r} is not available offline: {error}", where="--model",
                              hint="pass a local folder with the model, or make it available in the "
                                   "Hugging Face cache") from error
    if getattr(config, "auto_map", None) and not trust_remote_code:
        raise ModelError(f"model {model_id!r} runs code shipped with its weights", where="--model",
                         hint="read that code, then pass --trust-remote-code to run it")
    return config


# --- the shared generation core --------------------------------------------------------------
class GenerativeEmbedder:
    """Greedy generation plus hidden-state pooling for one loaded model; routes subclass it."""

    route: ClassVar[str] = "base"

    def __init__(self, model: Any, tokenizer: Any, model_id: str, device: Any, dtype: str,
                 settings: GenerationSettings, trust_remote_code: bool = False) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.settings = settings
        self.trust_remote_code = trust_remote_code
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = _eos_ids(model, tokenizer)
        self.generation_config = self._generation_config()
        params = inspect.signature(model.forward).parameters
        self._keep_logits = "logits_to_keep" in params

    # subclasses: tensors for a batch of items (left padded), on self.device
    def build_inputs(self, items: Sequence[ItemInput]) -> dict[str, Any]:
        raise NotImplementedError

    def uses_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def describe(self) -> dict[str, Any]:
        """What goes into manifests about this model and how it generates."""
        return {
            "route": self.route,
            "model": self.model_id,
            "model_class": type(self.model).__name__,
            "dtype": self.dtype,
            "device": str(self.device),
            "chat_template": self.uses_chat_template(),
            "generation": self.settings.to_dict(),
            "n_layers": int(getattr(self._text_config(), "num_hidden_layers", -1) or -1),
            "hidden_size": int(getattr(self._text_config(), "hidden_size", -1) or -1),
        }

    def run(self, items: Sequence[ItemInput], poolings: Sequence[str] = ("eos",), layer: int = -1) -> BatchResult:
        """Generate for a batch and pool the chosen layer's hidden states."""
        import torch

        poolings = check_poolings(list(poolings))
        inputs = self.build_inputs(items)
        kwargs: dict[str, Any] = {"tokenizer": self.tokenizer} if self.settings.stop_strings else {}
        with torch.inference_mode():
            sequences = self.model.generate(**inputs, generation_config=self.generation_config, **kwargs)
            if not torch.is_tensor(sequences):
                sequences = sequences.sequences
            n_prompt = inputs["input_ids"].shape[1]
            generated = sequences[:, n_prompt:]
            gen_mask, stopped = generated_mask(generated, self.eos_ids, self.tokenizer.pad_token_id)
            hidden = self.hidden_states(inputs, sequences, gen_mask, layer)
            pooled = pool(hidden, inputs["attention_mask"], gen_mask, poolings)
        texts = [
            self.tokenizer.decode(row[mask].tolist(), skip_special_tokens=True).strip()
            for row, mask in zip(generated.cpu(), gen_mask.cpu())
        ]
        return BatchResult(
            texts=texts,
            n_generated=gen_mask.sum(1).cpu().numpy().astype(np.int32),
            stopped=stopped.cpu().numpy(),
            pooled={k: v.cpu().numpy().astype(np.float32) for k, v in pooled.items()},
        )

    def hidden_states(self, inputs: dict[str, Any], sequences: Any, gen_mask: Any, layer: int) -> Any:
        """One forward pass over prompt + generated ids: the chosen layer, (batch, tokens, dim)."""
        import torch

        prompt_ids = inputs["input_ids"]
        batch, n_prompt = prompt_ids.shape
        n_gen = sequences.shape[1] - n_prompt
        full_mask = torch.cat([inputs["attention_mask"], gen_mask.to(inputs["attention_mask"].dtype)], 1)
        forward: dict[str, Any] = {}
        for key, value in inputs.items():
            if key == "input_ids":
                forward[key] = sequences
            elif key == "attention_mask":
                forward[key] = full_mask
            elif torch.is_tensor(value) and value.shape == prompt_ids.shape:
                # per-token side inputs (e.g. Qwen2-VL's mm_token_type_ids): generated tokens are text
                forward[key] = torch.cat([value, value.new_zeros(batch, n_gen)], 1)
            else:
                forward[key] = value
        if self._keep_logits:
            forward["logits_to_keep"] = 1
        out = self.model(**forward, output_hidden_states=True, use_cache=False, return_dict=True)
        states = getattr(out, "hidden_states", None)
        if states is None:
            raise ModelError(f"{type(self.model).__name__} returned no hidden states",
                             hint="this model class cannot give embeddings; try another model")
        return select_layer(states, layer)

    # --- helpers --------------------------------------------------------------------------
    def _text_config(self) -> Any:
        config = self.model.config
        return getattr(config, "text_config", None) or config

    def _generation_config(self) -> Any:
        from transformers import GenerationConfig

        base = getattr(self.model, "generation_config", None)
        config = copy.deepcopy(base) if base is not None else GenerationConfig()
        config.do_sample = False
        config.num_beams = 1
        for name in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty"):
            if hasattr(config, name):
                setattr(config, name, None)
        config.max_new_tokens = self.settings.max_new_tokens
        config.max_length = None
        config.pad_token_id = self.tokenizer.pad_token_id
        config.eos_token_id = sorted(self.eos_ids)
        config.stop_strings = list(self.settings.stop_strings) or None
        config.return_dict_in_generate = False
        config.output_hidden_states = False
        return config

    def _tokenize_kwargs(self, texts: Sequence[str]) -> dict[str, Any]:
        """Chat templates usually write the BOS token themselves: don't add a second one."""
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and all(t.startswith(bos) for t in texts):
            return {"add_special_tokens": False}
        return {}


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, getattr(model.config, "text_config", None)):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is None:
            continue
        ids.update([value] if isinstance(value, int) else list(value))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    # chat models end a turn with their own token (e.g. <end_of_turn>, <|im_end|>, <|end|>)
    for token in ("<end_of_turn>", "<|im_end|>", "<|end|>", "<|eot_id|>", "<end_of_utterance>"):
        token_id = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if token_id is not None:
            ids.add(int(token_id))
    if not ids:
        raise ModelError("the model declares no end-of-sequence token", hint="use a model with an eos_token_id")
    return ids


# --- the vision-language route ---------------------------------------------------------------
class LVLMExtractor(GenerativeEmbedder):
    """A vision-language model shown the item image and the prompt."""

    route = "lvlm"

    def __init__(self, model: Any, processor: Any, model_id: str, device: Any, dtype: str,
                 settings: GenerationSettings, trust_remote_code: bool = False,
                 max_image_side: int | None = None) -> None:
        self.processor = processor
        self.max_image_side = max_image_side
        super().__init__(model, processor.tokenizer, model_id, device, dtype, settings, trust_remote_code)

    def uses_chat_template(self) -> bool:
        return bool(getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None))

    def render(self, prompt: str) -> str:
        """The model's own chat format around one image and the prompt."""
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if type(self.processor).__name__.startswith("Phi3V") and getattr(self.tokenizer, "chat_template", None):
            # Phi-3(.5)-vision: string content with numbered image tags
            messages = [{"role": "user", "content": f"<|image_1|>\n{prompt}"}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        image_token = getattr(self.processor, "image_token", None) or "<image>"
        log.warning("%s has no chat template; using a plain '%s' + prompt layout", self.model_id, image_token)
        return f"{image_token}\n{prompt}\n"

    @property
    def batchable(self) -> bool:
        """Phi-3(.5)-vision's processor takes one prompt at a time: such models run item by item."""
        return not type(self.processor).__name__.startswith("Phi3V")

    def run(self, items: Sequence[ItemInput], poolings: Sequence[str] = ("eos",), layer: int = -1) -> BatchResult:
        if self.batchable or len(items) <= 1:
            return super().run(items, poolings, layer)
        parts = [super(LVLMExtractor, self).run([item], poolings, layer) for item in items]
        return BatchResult(
            texts=[t for p in parts for t in p.texts],
            n_generated=np.concatenate([p.n_generated for p in parts]),
            stopped=np.concatenate([p.stopped for p in parts]),
            pooled={k: np.concatenate([p.pooled[k] for p in parts]) for k in parts[0].pooled},
        )

    def build_inputs(self, items: Sequence[ItemInput]) -> dict[str, Any]:
        texts = [self.render(item.prompt) for item in items]
        images = [load_image(item.image, self.max_image_side) for item in items]
        images_arg: Any = [[image] for image in images] if _nested_images(self.processor) else images
        text_arg: Any = texts if self.batchable else texts[0]
        batch = self.processor(text=text_arg, images=images_arg, padding=True, return_tensors="pt",
                               **self._tokenize_kwargs(texts))
        return {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in batch.items()}


def _nested_images(processor: Any) -> bool:
    """Idefics3 / SmolVLM processors want one list of images per text."""
    return type(processor).__name__.startswith(("Idefics", "SmolVLM"))


def load_image(image: Any, max_side: int | None = None) -> Any:
    """An RGB PIL image from a path or image; optionally shrunk so its longer side is ``max_side``."""
    from PIL import Image

    if image is None:
        raise ModelError("the vision-language route needs an image for every item")
    if not isinstance(image, Image.Image):
        path = Path(image)
        try:
            with Image.open(path) as handle:
                image = handle.convert("RGB")
        except (OSError, ValueError) as error:
            raise FeatureError(f"cannot read image: {error}", where=str(path),
                               hint="check the image file or remove the item's image_path") from error
    else:
        image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    return image


def load_processor(model_id: str, trust_remote_code: bool = False) -> Any:
    """``AutoProcessor``; without torchvision, Qwen2-VL-style processors are built image-only.

    transformers 5 gives Qwen2-VL's processor a video processor that needs torchvision; items here
    are still images, so when torchvision is missing the processor is assembled from its
    tokenizer and (PIL) image processor alone.
    """
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    except ImportError as error:
        if "torchvision" not in str(error).lower():
            raise DependencyError(f"cannot load the processor of {model_id!r}: {error}", where="--model") from error
        return _image_only_processor(model_id, trust_remote_code, error)
    except OSError as error:
        raise DependencyError(f"the processor of {model_id!r} is not available offline: {error}",
                              where="--model", hint="pass a local folder with the model") from error


def _image_only_processor(model_id: str, trust_remote_code: bool, cause: Exception) -> Any:
    import json

    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.utils import cached_file

    config_file = cached_file(model_id, "processor_config.json", _raise_exceptions_for_missing_entries=False)
    name = json.loads(Path(config_file).read_text()).get("processor_class") if config_file else None
    base = getattr(transformers, name, None) if name else None
    if base is None or "video_processor" not in inspect.signature(base.__init__).parameters:
        raise DependencyError(f"the processor of {model_id!r} needs torchvision: {cause}", where="--model",
                              hint="pip install torchvision (matching your torch version)") from cause

    class ImageOnlyProcessor(base):  # type: ignore[misc, valid-type]
        """``base`` without its video processor (images only; no torchvision needed)."""

        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                     **kwargs: Any) -> None:
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    ImageOnlyProcessor.__name__ = f"{name}ImageOnly"
    tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    image_processor = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    template = _chat_template(model_id) or getattr(tokenizer, "chat_template", None)
    log.info("torchvision missing: using %s without its video processor", name)
    return ImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def _chat_template(model_id: str) -> str | None:
    import json

    from transformers.utils import cached_file

    for filename in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(model_id, filename, _raise_exceptions_for_missing_entries=False)
        if path:
            text = Path(path).read_text(encoding="utf-8")
            return json.loads(text)["chat_template"] if filename.endswith(".json") else text
    return None


def load_lvlm(model_id: str, *, device: str = "cpu", dtype: str = "float32", trust_remote_code: bool = False,
              settings: GenerationSettings | None = None, attn_implementation: str | None = None,
              max_image_side: int | None = None) -> LVLMExtractor:
    """Load a vision-language model and its processor from a hub id or local folder."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    settings = settings or GenerationSettings()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    path = str(resolve_model_dir(model_id))
    config = check_remote_code(path, trust_remote_code)
    processor = load_processor(path, trust_remote_code)
    if not hasattr(processor, "tokenizer"):
        raise ModelError(f"{model_id!r} has no text tokenizer in its processor", where="--model",
                         hint="use a vision-language model (image + text to text)")
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except ValueError as error:
        auto_map = getattr(config, "auto_map", None) or {}
        if trust_remote_code and "AutoModelForCausalLM" in auto_map:
            # remote-code LVLMs such as Phi-3.5-vision register as causal LMs
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        else:
            raise ModelError(f"{model_id!r} is not an image-text-to-text model: {error}", where="--model",
                             hint="use a vision-language model, or --text-only for a text LLM") from error
    model.to(torch_device).eval()
    return LVLMExtractor(model, processor, model_id, torch_device, dtype, settings, trust_remote_code,
                         max_image_side)
