"""GPU check of the LVLM route: batched, left-padded runs on CUDA match item-by-item references.

A. Tiny random Qwen2-VL in float32 (TF32 off): every item generated alone without padding, its
   hidden states from a plain forward pass, must match the batched run (same text, same number of
   generated tokens, pooled vectors allclose); two runs must be identical. FAIL exits 1.
B. The full-size Qwen2-VL-2B architecture (random weights, bfloat16, 448x448 images): reports how
   often batched and single-item texts agree and how close the pooled vectors are (bfloat16 rounding
   differs with batch shape, so this is a report, not a pass/fail), and whether repeated batched
   runs are bit-identical.

Standalone (torch, transformers 5.x, tokenizers, pillow; modalrec from ``src/``); about 1-2 minutes
on one H100/H200. ``--device cpu`` runs part A only, for a local try.

    python benchmarks/lvlm_gpu_check.py --device cuda [--out check.json]

On one NVIDIA H200 (torch 2.11, transformers 5.17; 36 s): A passed, max |diff| 7e-7; B: texts
equal for 8 of 8 items, smallest cosines eos 0.662, last_prompt 0.9997, mean_generated 0.978,
mean_all 0.9997, repeated batched runs not bit-identical, peak 5.0 GiB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lvlm_speed import QWEN2_VL_2B, TINY, build_model, build_processor, build_tokenizer, prompt_text  # noqa: E402
from modalrec.features.hidden_pooling import POOLINGS  # noqa: E402
from modalrec.features.lvlm import GenerationSettings, ItemInput, LVLMExtractor  # noqa: E402


def items_for(n: int, prompt: str, sides: list[tuple[int, int]], seed: int = 0) -> list[ItemInput]:
    """Items with different prompt lengths and image sizes, so a batch really is padded."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    tails = ["", " Be brief.", " The photo may show several products; describe the main one.", " Thanks!"]
    return [ItemInput(f"i{k}", prompt + tails[k % len(tails)],
                      Image.fromarray(rng.integers(0, 255, (*sides[k % len(sides)], 3), dtype=np.uint8)))
            for k in range(n)]


def make_eos_reachable(extractor: LVLMExtractor, items: list[ItemInput]) -> None:
    """Random weights never stop: give EOS the output row of a token the items produce at different
    steps, so some rows stop early and others run to the limit (equal logits go to the lower id)."""
    eos = min(extractor.eos_ids)
    batch = extractor.build_inputs(items)
    with torch.no_grad():
        out = extractor.model.generate(**batch, generation_config=extractor.generation_config)
    rows = out[:, batch["input_ids"].shape[1]:].tolist()
    limit = extractor.settings.max_new_tokens

    def stops(token: int) -> list[int]:
        return [row.index(token) + 1 if token in row else limit for row in rows]

    best = max(sorted({t for row in rows for t in row if t > eos}),
               key=lambda t: (limit in stops(t) and min(stops(t)) > 1, len(set(stops(t))), -t))
    with torch.no_grad():
        extractor.model.get_output_embeddings().weight[eos] = extractor.model.get_output_embeddings().weight[best]


def reference(extractor: LVLMExtractor, item: ItemInput, layer: int = -1) -> dict:
    """One item, no padding: generate, cut at EOS, plain forward over prompt + generated."""
    batch = extractor.build_inputs([item])
    with torch.no_grad():
        out = extractor.model.generate(**batch, generation_config=extractor.generation_config)
        n_prompt = batch["input_ids"].shape[1]
        generated = out[0, n_prompt:].tolist()
        cut = next((i + 1 for i, t in enumerate(generated) if t in extractor.eos_ids), len(generated))
        generated = generated[:cut]
        ids = torch.tensor([batch["input_ids"][0].tolist() + generated], device=extractor.device)
        extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in extra:
            extra["mm_token_type_ids"] = torch.cat(
                [extra["mm_token_type_ids"], extra["mm_token_type_ids"].new_zeros(1, len(generated))], 1)
        states = extractor.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True,
                                 use_cache=False, **extra).hidden_states[layer][0].float().cpu()
    return {"text": extractor.tokenizer.decode(generated, skip_special_tokens=True).strip(),
            "n_generated": len(generated), "eos": states[-1], "last_prompt": states[n_prompt - 1],
            "mean_generated": states[n_prompt:].mean(0), "mean_all": states.mean(0)}


def build(spec: dict, device: torch.device, dtype_name: str, max_new: int, side: int, folder: Path) -> LVLMExtractor:
    prompt = prompt_text()
    processor = build_processor(folder, build_tokenizer([prompt] * 4), side)
    model = build_model(spec, processor.tokenizer, device, getattr(torch, dtype_name))
    return LVLMExtractor(model, processor, "random", device, dtype_name, GenerationSettings(max_new_tokens=max_new))


def part_a(device: torch.device, folder: Path) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    extractor = build(TINY, device, "float32", 12, 112, folder)
    items = items_for(8, prompt_text(), [(60, 80), (112, 112), (100, 50), (90, 120)])
    make_eos_reachable(extractor, items)
    result = extractor.run(items, POOLINGS)
    again = extractor.run(items, POOLINGS)
    refs = [reference(extractor, item) for item in items]
    checks = {
        "texts_equal": result.texts == [r["text"] for r in refs],
        "n_generated_equal": result.n_generated.tolist() == [r["n_generated"] for r in refs],
        "some_rows_stop_early": bool(result.stopped.any() and len(set(result.n_generated.tolist())) > 1),
        "deterministic": result.texts == again.texts and all(
            np.array_equal(result.pooled[p], again.pooled[p]) for p in POOLINGS),
    }
    max_diff = {}
    for pooling in POOLINGS:
        want = torch.stack([r[pooling] for r in refs]).numpy()
        max_diff[pooling] = float(np.abs(result.pooled[pooling] - want).max())
        checks[f"{pooling}_allclose"] = bool(np.allclose(result.pooled[pooling], want, rtol=1e-3, atol=1e-4))
    return {"checks": checks, "max_abs_diff": max_diff, "n_generated": result.n_generated.tolist(),
            "passed": all(checks.values())}


def part_b(device: torch.device, folder: Path, n: int) -> dict:
    extractor = build(QWEN2_VL_2B, device, "bfloat16", 32, 448, folder)
    items = items_for(n, prompt_text(), [(448, 448), (448, 336), (336, 448)], seed=1)
    batched = extractor.run(items, POOLINGS)
    repeat = extractor.run(items, POOLINGS)
    singles = [extractor.run([item], POOLINGS) for item in items]
    same_text = [b == s.texts[0] for b, s in zip(batched.texts, singles)]
    cosine = {}
    for pooling in POOLINGS:
        a = batched.pooled[pooling]
        b = np.concatenate([s.pooled[pooling] for s in singles])
        cosine[pooling] = float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    return {
        "items": n, "texts_equal_share": float(np.mean(same_text)),
        "min_cosine_batched_vs_single": cosine,
        "repeat_bit_identical": batched.texts == repeat.texts and all(
            np.array_equal(batched.pooled[p], repeat.pooled[p]) for p in POOLINGS),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--items", type=int, default=8, help="items for part B")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu for part A only")
        return 2
    import transformers

    started = time.perf_counter()
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "transformers": transformers.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        report["A_tiny_float32"] = part_a(device, Path(tmp) / "a")
        print("A:", json.dumps(report["A_tiny_float32"]), flush=True)
        if device.type == "cuda":
            report["B_qwen2vl_2b_bfloat16"] = part_b(device, Path(tmp) / "b", args.items)
            print("B:", json.dumps(report["B_qwen2vl_2b_bfloat16"]), flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    passed = report["A_tiny_float32"]["passed"]
    print(f"{'PASS' if passed else 'FAIL'}: batched LVLM route equals item-by-item references "
          f"({report['device']}, {report['seconds']}s)")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
