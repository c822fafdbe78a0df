"""Throughput of the LVLM route: items per second for generation + hidden-state pass + pooling.

CPU (default): a tiny random Qwen2-VL built on the fly (mechanics and overhead, not a real model).
``--device cuda``: the full-size Qwen2-VL-2B architecture (the numbers of Qwen/Qwen2-VL-2B-Instruct's
config, written below) with random weights in bfloat16, realistic 448x448 images (256 image tokens
each) and 64 new tokens, for a few batch sizes. Random weights never emit the end-of-sequence
token, so every item generates exactly ``--max-new-tokens`` tokens: a fixed, worst-case budget.

Standalone: needs torch, transformers (5.x), tokenizers and pillow; modalrec is imported from
``src/`` (no install). Runs in well under 5 minutes on one H100/H200.

    python benchmarks/lvlm_speed.py                          # CPU, tiny model
    python benchmarks/lvlm_speed.py --device cuda            # GPU, Qwen2-VL-2B architecture
    python benchmarks/lvlm_speed.py --device cuda --batch-sizes 1,16,64 --out lvlm_gpu.json

On one NVIDIA H200 (torch 2.11, transformers 5.17; ``--batch-sizes 1,8,32,64``): 0.69, 4.85, 15.1
and 22.3 items/s (44, 310, 963 and 1,429 new tokens/s), peak 4.3 to 12.2 GiB, 61 s in all.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from modalrec.features.hidden_pooling import POOLINGS  # noqa: E402
from modalrec.features.lvlm import GenerationSettings, ItemInput, LVLMExtractor, load_processor  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen/Qwen2-VL-2B-Instruct, config.json
QWEN2_VL_2B = {
    "text": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                 rms_norm_eps=1e-6, tie_word_embeddings=True,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    "vision": dict(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16, in_channels=3,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
    "tie_word_embeddings": True,
}
TINY = {
    "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}),
    "vision": dict(depth=2, embed_dim=64, hidden_size=64, mlp_ratio=2, num_heads=4, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2),
    "tie_word_embeddings": False,
}


def prompt_text() -> str:
    try:
        from modalrec.features.prompts import BUILTIN

        return BUILTIN["baby"].render()
    except ImportError:  # pydantic missing on the machine: the same prompt, written out
        return ("You are a metadata annotator for an image database of baby products. Look carefully at the item in "
                "the picture and describe it with one short keyword or phrase for each of these slots: Category, "
                "Age Group, Purpose, Material, Usage Context.\n\nAnswer on one line, in exactly this form and nothing "
                "else:\n[Category] {value}, [Age Group] {value}, [Purpose] {value}, [Material] {value}, "
                "[Usage Context] {value}\n\nExample answer:\n[Category] {Feeding Bottle}, [Age Group] {Newborn}, "
                "[Purpose] {Feeding}, [Material] {Glass}, [Usage Context] {Home}")


def build_tokenizer(corpus: list[str]):
    """A BPE tokenizer trained on the prompts: about one token per word, like Qwen's on English."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=TEMPLATE)


def build_processor(folder: Path, tokenizer, image_side: int):
    """Save a Qwen2-VL processor folder (real layout) and load it the way the library does."""
    import transformers

    pixels = image_side * image_side
    image_processor = transformers.Qwen2VLImageProcessor(size={"shortest_edge": min(pixels, 56 * 56),
                                                               "longest_edge": max(pixels, 56 * 56)})
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    try:  # with torchvision, the full processor (video part included)
        from transformers import Qwen2VLProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
                         chat_template=TEMPLATE).save_pretrained(folder)
    except (ImportError, TypeError, ValueError):
        pass
    return load_processor(str(folder))


def build_model(spec: dict, tokenizer, device: torch.device, dtype: torch.dtype):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids(SPECIAL)
    text = dict(spec["text"])
    text.setdefault("vocab_size", len(tokenizer))
    text.update(bos_token_id=ids[0], eos_token_id=ids[2], pad_token_id=ids[0])
    config = Qwen2VLConfig(text_config=text, vision_config=spec["vision"], tie_word_embeddings=spec["tie_word_embeddings"],
                           image_token_id=ids[5], video_token_id=ids[6], vision_start_token_id=ids[3],
                           vision_end_token_id=ids[4])
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = Qwen2VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype).eval()


def make_items(n: int, side: int, prompt: str, seed: int = 0) -> list[ItemInput]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [ItemInput(f"i{k}", prompt, Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)))
            for k in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(extractor: LVLMExtractor, items: list[ItemInput], batch_size: int, poolings: tuple[str, ...]) -> dict:
    device = extractor.device
    hidden_seconds = [0.0]
    original = extractor.hidden_states

    def timed_hidden(*args, **kwargs):
        sync(device)
        start = time.perf_counter()
        out = original(*args, **kwargs)
        sync(device)
        hidden_seconds[0] += time.perf_counter() - start
        return out

    extractor.hidden_states = timed_hidden  # type: ignore[method-assign]
    try:
        extractor.run(items[:batch_size], poolings)  # warm-up (kernels, allocator)
        hidden_seconds[0] = 0.0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        prompt_tokens = 0
        for i in range(0, len(items), batch_size):
            batch = items[i: i + batch_size]
            prompt_tokens += int(extractor.build_inputs(batch)["attention_mask"].sum()) if i == 0 else 0
            extractor.run(batch, poolings)
        sync(device)
        seconds = time.perf_counter() - start
    finally:
        extractor.hidden_states = original  # type: ignore[method-assign]
    n = len(items)
    return {
        "batch_size": batch_size, "items": n, "seconds": round(seconds, 3),
        "items_per_s": round(n / seconds, 3),
        "new_tokens_per_s": round(n * extractor.settings.max_new_tokens / seconds, 1),
        "hidden_pass_share": round(hidden_seconds[0] / seconds, 3),
        "prompt_tokens_per_item": round(prompt_tokens / min(batch_size, n), 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", help="comma-separated (default cpu 1,4,8; cuda 1,8,32)")
    parser.add_argument("--items", type=int, help="items per batch size (default: max(8, 2 x batch size) on cuda, 16 on cpu)")
    parser.add_argument("--max-new-tokens", type=int, help="default cpu 16, cuda 64")
    parser.add_argument("--image-side", type=int, help="square image side in pixels (default cpu 224, cuda 448)")
    parser.add_argument("--dtype", help="default cpu float32, cuda bfloat16")
    parser.add_argument("--poolings", default="eos,last_prompt,mean_generated,mean_all")
    parser.add_argument("--attn", help="attention implementation (sdpa, eager, flash_attention_2)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    spec = QWEN2_VL_2B if gpu else TINY
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,8,32" if gpu else "1,4,8")).split(",")]
    max_new = args.max_new_tokens or (64 if gpu else 16)
    side = args.image_side or (448 if gpu else 224)
    dtype_name = args.dtype or ("bfloat16" if gpu else "float32")
    dtype = getattr(torch, dtype_name)
    poolings = tuple(p for p in args.poolings.split(",") if p)
    assert set(poolings) <= set(POOLINGS), f"poolings must be among {POOLINGS}"

    import transformers

    started = time.perf_counter()
    prompt = prompt_text()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer([prompt] * 4)
        processor = build_processor(Path(tmp), tokenizer, side)
        model = build_model(spec, processor.tokenizer, device, dtype)
        if args.attn:
            model.set_attn_implementation(args.attn)
        n_params = sum(p.numel() for p in model.parameters())
        extractor = LVLMExtractor(model, processor, "random:qwen2-vl-2b" if gpu else "random:tiny-qwen2-vl", device,
                                  dtype_name, GenerationSettings(max_new_tokens=max_new))
        setup = time.perf_counter() - started
        rows = []
        for bs in batch_sizes:
            n_items = args.items or (max(8, 2 * bs) if gpu else 16)
            items = make_items(n_items, side, prompt, seed=bs)
            row = measure(extractor, items, bs, poolings)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "benchmark": "lvlm_speed", "device": torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu",
        "model": "Qwen2-VL-2B architecture, random weights" if gpu else "tiny Qwen2-VL, random weights",
        "parameters": n_params, "dtype": dtype_name, "image": f"{side}x{side}", "max_new_tokens": max_new,
        "poolings": list(poolings), "torch": torch.__version__, "transformers": transformers.__version__,
        "setup_seconds": round(setup, 1), "total_seconds": round(time.perf_counter() - started, 1), "rows": rows,
    }
    print()
    print(f"{result['model']} ({n_params / 1e6:.1f}M parameters), {dtype_name}, {result['device']}, "
          f"images {side}x{side}, {max_new} new tokens, poolings {','.join(poolings)}")
    print(f"{'batch':>5}  {'items':>5}  {'items/s':>8}  {'new tok/s':>9}  {'hidden pass':>11}  {'prompt tok':>10}  {'peak GiB':>8}")
    for r in rows:
        print(f"{r['batch_size']:>5}  {r['items']:>5}  {r['items_per_s']:>8.2f}  {r['new_tokens_per_s']:>9.1f}  "
              f"{r['hidden_pass_share']:>10.0%}  {r['prompt_tokens_per_item']:>10.0f}  {r['peak_gpu_gib'] or '-':>8}")
    print(f"setup {result['setup_seconds']}s, total {result['total_seconds']}s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
