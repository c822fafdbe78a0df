"""The vision-language route on tiny random models built offline (Qwen2-VL, Qwen2.5-VL, LLaVA).

Checks against a slow reference: every item generated alone, without padding, and its hidden
states taken from a plain forward pass; the batched, left-padded run must give the same text and
(up to float rounding) the same pooled vectors. Also: generate's own hidden states, determinism,
the end-of-sequence position, layer selection, remote-code refusal, resumable descriptions and
the manifests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")

from modalrec.cli.main import main  # noqa: E402
from modalrec.data.dataset import Dataset  # noqa: E402
from modalrec.errors import ConfigError, ModelError  # noqa: E402
from modalrec.features.descriptions import load_descriptions, run_descriptions  # noqa: E402
from modalrec.features.hidden_pooling import POOLINGS  # noqa: E402
from modalrec.features.lvlm import GenerationSettings, ItemInput, load_image, load_lvlm  # noqa: E402
from modalrec.features.prompts import PromptSpec  # noqa: E402
from modalrec.features.store import FeatureStore  # noqa: E402

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_SPECIAL = ["<pad>", "<s>", "</s>", "<image>"]
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
MAX_NEW = 10
SHORT = PromptSpec(name="short", kind="slots", instruction="Tag the {source}.", slots=("Kind", "Color"),
                   example=("Toy", "Red"))


def byte_tokenizer(special: list[str], eos: str, pad: str, template: str):
    """A byte-level tokenizer (every byte one token, no merges) with the given special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(special + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, chat_template=template)


def images(n: int, seed: int = 0) -> list:
    """Random RGB images of varied sizes (so items get different numbers of image tokens)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(60, 80), (100, 50), (56, 56), (90, 120), (70, 70), (128, 64)]
    return [Image.fromarray(rng.integers(0, 255, (*sizes[i % len(sizes)], 3), dtype=np.uint8)) for i in range(n)]


def make_eos_reachable(model, processor, eos_id: int) -> None:
    """Random weights rarely emit EOS: give EOS the output row of a token that the test items
    generate at different steps (or not at all), so some items stop early, at different points,
    and others run to the token limit. Equal logits resolve to the lower id, EOS."""
    processor.tokenizer.padding_side = "left"
    items = make_items(6)
    prompts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": item.prompt}]}],
        add_generation_prompt=True, tokenize=False) for item in items]
    batch = processor(text=prompts, images=[item.image for item in items], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=MAX_NEW, do_sample=False)
    rows = out[:, batch["input_ids"].shape[1]:].tolist()

    def stops(token: int) -> list[int]:
        return [row.index(token) + 1 if token in row else MAX_NEW for row in rows]

    candidates = sorted({t for row in rows for t in row if t > eos_id})
    best = max(candidates, key=lambda t: (MAX_NEW in stops(t) and min(stops(t)) > 1, len(set(stops(t))), -t))
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        head[eos_id] = head[best]


def build_qwen(folder: Path, family: str = "qwen2_vl") -> Path:
    """Tiny Qwen2-VL (or Qwen2.5-VL) with the layout of a real checkpoint folder."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = byte_tokenizer(QWEN_SPECIAL, "<|im_end|>", "<|endoftext|>", QWEN_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids(QWEN_SPECIAL)
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 56 * 56 * 4})
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    # the layout of a real checkpoint (the processor itself needs torchvision for its video part)
    processor_class = "Qwen2VLProcessor" if family == "qwen2_vl" else "Qwen2_5_VLProcessor"
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": processor_class}))
    (folder / "chat_template.jinja").write_text(QWEN_TEMPLATE)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
                bos_token_id=ids[0], eos_token_id=ids[2], pad_token_id=ids[0])
    special = dict(image_token_id=ids[5], video_token_id=ids[6], vision_start_token_id=ids[3],
                   vision_end_token_id=ids[4])
    if family == "qwen2_vl":
        config = Qwen2VLConfig(text_config=text, vision_config=dict(
            depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2), **special)
        model_class = Qwen2VLForConditionalGeneration
    else:
        config = Qwen2_5_VLConfig(text_config=text, vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, out_hidden_size=32, num_heads=2, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]), **special)
        model_class = Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(0)
    model = model_class(config).eval()
    from modalrec.features.lvlm import load_processor

    make_eos_reachable(model, load_processor(str(folder)), ids[2])
    model.save_pretrained(folder)
    return folder


def build_llava(folder: Path) -> Path:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = byte_tokenizer(LLAVA_SPECIAL, "</s>", "<pad>", LLAVA_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids(LLAVA_SPECIAL)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE,
                               num_additional_image_tokens=1)
    processor.save_pretrained(folder)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=28, patch_size=14),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                                bos_token_id=ids[1], eos_token_id=ids[2], pad_token_id=ids[0]),
        image_token_index=ids[3], vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=4)
    torch.manual_seed(1)
    model = LlavaForConditionalGeneration(config).eval()
    make_eos_reachable(model, processor, ids[2])
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    return build_qwen(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="session")
def tiny_qwen25(tmp_path_factory) -> Path:
    return build_qwen(tmp_path_factory.mktemp("tiny-qwen25vl"), "qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    return build_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def qwen(tiny_qwen):
    return load_lvlm(str(tiny_qwen), settings=GenerationSettings(max_new_tokens=MAX_NEW))


@pytest.fixture(scope="session")
def qwen25(tiny_qwen25):
    return load_lvlm(str(tiny_qwen25), settings=GenerationSettings(max_new_tokens=MAX_NEW))


@pytest.fixture(scope="session")
def llava(tiny_llava):
    return load_lvlm(str(tiny_llava), settings=GenerationSettings(max_new_tokens=MAX_NEW))


def make_items(n: int = 6) -> list[ItemInput]:
    words = ["a", "a red ball", "soft blanket for the crib", "b", "stroller", "a very long prompt " * 3]
    return [ItemInput(f"i{k}", SHORT.render() + " " + words[k % len(words)], img)
            for k, img in enumerate(images(n))]


def reference(extractor, item: ItemInput, layer: int) -> dict:
    """Slow reference: one item, no padding, plain forward over prompt + generated (up to EOS)."""
    batch = extractor.build_inputs([item])
    assert int(batch["attention_mask"].min()) == 1  # a single item has no padding
    with torch.no_grad():
        out = extractor.model.generate(**batch, generation_config=extractor.generation_config)
        n_prompt = batch["input_ids"].shape[1]
        generated = out[0, n_prompt:].tolist()
        cut = next((i + 1 for i, t in enumerate(generated) if t in extractor.eos_ids), len(generated))
        generated = generated[:cut]
        ids = torch.tensor([batch["input_ids"][0].tolist() + generated])
        forward = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in forward:
            forward["mm_token_type_ids"] = torch.cat(
                [forward["mm_token_type_ids"], torch.zeros(1, len(generated), dtype=torch.long)], 1)
        states = extractor.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True,
                                 **forward).hidden_states[layer][0].float()
    return {
        "text": extractor.tokenizer.decode(generated, skip_special_tokens=True).strip(),
        "n_generated": len(generated),
        "stopped": generated[-1] in extractor.eos_ids,
        "eos": states[-1], "last_prompt": states[n_prompt - 1],
        "mean_generated": states[n_prompt:].mean(0), "mean_all": states.mean(0),
    }


@pytest.mark.parametrize(("family", "layer"), [("qwen", -1), ("qwen", 1), ("qwen25", -1), ("llava", -1)])
def test_batched_equals_item_by_item_reference(family, layer, request):
    extractor = request.getfixturevalue(family)
    items = make_items(6)
    result = extractor.run(items, POOLINGS, layer)
    refs = [reference(extractor, item, layer) for item in items]
    assert result.texts == [r["text"] for r in refs]
    assert result.n_generated.tolist() == [r["n_generated"] for r in refs]
    assert result.stopped.tolist() == [r["stopped"] for r in refs]
    # the fixture's EOS tweak must give both early stops and full-length runs, so padding is exercised
    assert result.stopped.any() and len(set(result.n_generated.tolist())) > 1
    dim = extractor.model.config.get_text_config().hidden_size
    for pooling in POOLINGS:
        got = result.pooled[pooling]
        assert got.shape == (6, dim) and got.dtype == np.float32
        want = torch.stack([r[pooling] for r in refs]).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=pooling)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["qwen", "qwen25", "llava"])
def test_cuda_gives_the_cpu_results(family, request, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the patch convolution in full float32
    items = make_items(6)
    want = request.getfixturevalue(family).run(items, POOLINGS, -1)
    folder = request.getfixturevalue(f"tiny_{family}")
    got = load_lvlm(str(folder), device="cuda", settings=GenerationSettings(max_new_tokens=MAX_NEW)).run(items, POOLINGS, -1)
    assert got.texts == want.texts and got.n_generated.tolist() == want.n_generated.tolist()
    for pooling in POOLINGS:
        np.testing.assert_allclose(got.pooled[pooling], want.pooled[pooling], rtol=1e-4, atol=1e-5, err_msg=pooling)


def test_batches_of_one_equal_one_batch(qwen):
    items = make_items(3)
    whole = qwen.run(items, ("eos", "mean_all"))
    single = [qwen.run([item], ("eos", "mean_all")) for item in items]
    assert whole.texts == [s.texts[0] for s in single]
    for pooling in ("eos", "mean_all"):
        np.testing.assert_allclose(whole.pooled[pooling], np.concatenate([s.pooled[pooling] for s in single]),
                                   rtol=1e-4, atol=1e-5)


def test_last_prompt_equals_generate_hidden_state(qwen):
    """The extra forward pass reproduces the state ``generate`` itself computed for the prompt."""
    items = make_items(3)
    batch = qwen.build_inputs(items)
    config = qwen.generation_config
    with torch.no_grad():
        out = qwen.model.generate(**batch, generation_config=config, return_dict_in_generate=True,
                                  output_hidden_states=True)
    first_step_last_layer = out.hidden_states[0][-1][:, -1].float().numpy()
    result = qwen.run(items, ("last_prompt",))
    np.testing.assert_allclose(result.pooled["last_prompt"], first_step_last_layer, rtol=1e-4, atol=1e-5)


def test_deterministic(qwen):
    items = make_items(3)
    a, b = qwen.run(items, ("eos", "mean_generated")), qwen.run(items, ("eos", "mean_generated"))
    assert a.texts == b.texts
    for pooling in ("eos", "mean_generated"):
        np.testing.assert_array_equal(a.pooled[pooling], b.pooled[pooling])


def test_eos_pooling_is_the_state_at_the_stop_token(qwen):
    items = make_items(6)
    result = qwen.run(items, ("eos", "mean_generated"))
    for k in range(len(items)):
        n = int(result.n_generated[k])
        assert 1 <= n <= MAX_NEW
        if n < MAX_NEW:
            assert result.stopped[k]
        if n == 1:  # one generated token: its state is the mean of the generated tokens too
            np.testing.assert_allclose(result.pooled["eos"][k], result.pooled["mean_generated"][k], atol=1e-6)


def test_layer_selection(qwen):
    items = make_items(2)
    n_states = qwen.model.config.get_text_config().num_hidden_layers + 1
    first = qwen.run(items, ("mean_all",), layer=0).pooled["mean_all"]
    same = qwen.run(items, ("mean_all",), layer=-n_states).pooled["mean_all"]
    last = qwen.run(items, ("mean_all",), layer=-1).pooled["mean_all"]
    np.testing.assert_array_equal(first, same)
    assert not np.allclose(first, last)
    with pytest.raises(ConfigError, match="layer 3 out of range"):
        qwen.run(items, ("eos",), layer=n_states)
    with pytest.raises(ConfigError, match="unknown pooling"):
        qwen.run(items, ("cls",))


def test_remote_code_needs_explicit_trust(tmp_path):
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "phi3_v", "architectures": ["Phi3VForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_phi3_v.Phi3VConfig",
                     "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM"}}))
    with pytest.raises(ModelError, match="--trust-remote-code"):
        load_lvlm(str(folder))
    assert main(["describe", "run", str(tmp_path), "--model", str(folder), "--prompt", "baby"]) == 2


def test_bad_device_and_dtype(tiny_qwen):
    with pytest.raises(ConfigError, match="dtype"):
        load_lvlm(str(tiny_qwen), dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            load_lvlm(str(tiny_qwen), device="cuda")


def test_missing_model_is_a_clear_error(tmp_path):
    from modalrec.errors import DependencyError

    with pytest.raises(DependencyError, match="neither a local folder"):
        load_lvlm(str(tmp_path / "nowhere" / "model"))


def test_load_image_shrinks_and_reports_bad_files(tmp_path):
    from modalrec.errors import FeatureError

    img = images(1)[0]
    assert max(load_image(img, max_side=40).size) == 40
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(FeatureError, match="cannot read image"):
        load_image(bad)


# --- descriptions: resumable runs, table, features, manifest ------------------------------------
def make_dataset(folder: Path, n_items: int = 7, missing_image: bool = True) -> Path:
    """A tiny data set with an image per item (the last one has none)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for k, img in enumerate(images(n_items, seed=3)):
        if missing_image and k == n_items - 1:
            paths.append(None)
            continue
        img.save(folder / "images" / f"{k}.png")
        paths.append(f"images/{k}.png")
    items = pd.DataFrame({"item_id": [f"p{k}" for k in range(n_items)],
                          "title": [f"product {k}" for k in range(n_items)], "image_path": paths})
    inter = pd.DataFrame({"user_id": ["u0", "u1"] * n_items, "item_id": list(items["item_id"]) * 2})
    Dataset.from_frames(inter, items).save(folder)
    return folder


class Crash(RuntimeError):
    pass


def test_resume_after_crash_equals_uninterrupted_run(qwen, tmp_path):
    once = make_dataset(tmp_path / "once")
    crashed = make_dataset(tmp_path / "crashed")
    poolings = ("eos", "mean_generated")
    full = run_descriptions(once, qwen, SHORT, name="run", poolings=poolings, batch_size=2, progress=False)
    assert full.computed_items == 6 and full.resumed_items == 0

    seen: list[int] = []

    def crash_after_four(n_done: int) -> None:
        seen.append(n_done)
        if n_done >= 4:
            raise Crash("killed")

    with pytest.raises(Crash):
        run_descriptions(crashed, qwen, SHORT, name="run", poolings=poolings, batch_size=2,
                         progress=False, after_batch=crash_after_four)
    assert seen == [2, 4]
    assert not (crashed / "descriptions" / "run.json").exists()  # nothing final yet
    parts = sorted((crashed / "descriptions" / ".run.parts").glob("part-*.parquet"))
    assert len(parts) == 2
    # a half-written batch (embeddings without their Parquet part) must be ignored
    np.save(crashed / "descriptions" / ".run.parts" / "part-000002.eos.npy", np.ones((2, 32), np.float32))

    resumed = run_descriptions(crashed, qwen, SHORT, name="run", poolings=poolings, batch_size=3,
                               progress=False)
    assert resumed.resumed_items == 4 and resumed.computed_items == 2
    assert not (crashed / "descriptions" / ".run.parts").exists()
    pd.testing.assert_frame_equal(resumed.table, full.table)
    assert resumed.table["item_id"].is_unique and len(resumed.table) == 7
    for pooling in poolings:
        a = FeatureStore(once).load(f"lvlm-run-{pooling}")
        b = FeatureStore(crashed).load(f"lvlm-run-{pooling}")
        np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.mask.tolist() == [True] * 6 + [False]


def test_descriptions_table_and_manifests(qwen, tmp_path):
    data = make_dataset(tmp_path / "d")
    result = run_descriptions(data, qwen, SHORT, name="tags", poolings=("eos", "last_prompt"), layer=-1,
                              batch_size=4, progress=False)
    table, manifest = load_descriptions(data, "tags")
    assert list(table.columns[:8]) == ["item_id", "has_output", "text", "prompt", "prompt_hash", "model",
                                       "n_generated", "stopped"]
    assert {"value:Kind", "status:Kind", "value:Color", "status:Color"} <= set(table.columns)
    assert table["has_output"].tolist() == [True] * 6 + [False]
    assert table.loc[6, "status:Kind"] == "missing" and pd.isna(table.loc[6, "text"])
    assert (table["prompt_hash"] == SHORT.prompt_hash("image")).all()
    assert manifest["skipped"] == {"no image": 1}
    assert manifest["identity"]["poolings"] == ["eos", "last_prompt"]
    feature = FeatureStore(data).load("lvlm-tags-last_prompt")
    m = feature.manifest
    assert m["model"] == qwen.model_id and m["prompt"] == "short" and m["prompt_hash"] == SHORT.prompt_hash("image")
    assert m["layer"] == -1 and m["pooling"] == "last_prompt" and m["dtype"] == "float32"
    assert m["generation"]["do_sample"] is False and m["generation"]["max_new_tokens"] == MAX_NEW
    assert feature.matrix.shape == (7, 32) and not feature.matrix[6].any()
    # same settings again: up to date, nothing computed
    again = run_descriptions(data, qwen, SHORT, name="tags", poolings=("eos", "last_prompt"), progress=False)
    assert again.up_to_date and again.computed_items == 0
    # other settings under the same name: refused without --overwrite
    with pytest.raises(ConfigError, match="other settings"):
        run_descriptions(data, qwen, SHORT, name="tags", poolings=("eos",), layer=0, progress=False)
    redo = run_descriptions(data, qwen, SHORT, name="tags", poolings=("eos",), layer=0, overwrite=True,
                            progress=False)
    assert redo.computed_items == 6
    assert result.table["text"].tolist() == redo.table["text"].tolist()


def test_interrupted_run_with_other_settings_is_refused(qwen, tmp_path):
    data = make_dataset(tmp_path / "d")

    def crash(n_done: int) -> None:
        raise Crash("killed")

    with pytest.raises(Crash):
        run_descriptions(data, qwen, SHORT, name="x", batch_size=2, progress=False, after_batch=crash)
    with pytest.raises(ConfigError, match="interrupted run with other settings"):
        run_descriptions(data, qwen, SHORT, name="x", layer=0, batch_size=2, progress=False)


def test_cli_describe_run_llava_builtin_prompt(tiny_llava, tmp_path, capsys):
    data = make_dataset(tmp_path / "d", n_items=3)
    code = main(["describe", "run", str(data), "--model", str(tiny_llava), "--prompt", "baby",
                 "--pooling", "eos,mean_all", "--batch-size", "2", "--max-new-tokens", "6", "--name", "llv"])
    assert code == 0
    out = capsys.readouterr().out
    assert "descriptions llv: 2 of 3 items" in out and "feature lvlm-llv-mean_all: dim 32" in out
    assert set(FeatureStore(data).names()) >= {"lvlm-llv-eos", "lvlm-llv-mean_all"}
    assert main(["describe", "run", str(data), "--model", str(tiny_llava), "--prompt", "nope"]) == 2


# --- pooling arithmetic on hand-made states ------------------------------------------------------
def test_generated_mask_eos_padding_and_stop_strings():
    from modalrec.features.hidden_pooling import generated_mask

    eos, pad = 2, 0
    generated = torch.tensor([
        [5, 6, 2, 0, 0],   # stopped on EOS, then padded
        [5, 6, 7, 8, 9],   # ran to the limit
        [5, 0, 0, 0, 0],   # stopped by a stop string (no EOS), padded
        [2, 0, 0, 0, 0],   # EOS right away
    ])
    mask, stopped = generated_mask(generated, {eos}, pad)
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]
    assert stopped.tolist() == [True, False, True, True]
    # when padding is the EOS token, the first EOS ends the row
    mask, _ = generated_mask(torch.tensor([[5, 2, 2, 2]]), {2}, 2)
    assert mask.int().tolist() == [[1, 1, 0, 0]]


def test_pool_by_hand():
    from modalrec.features.hidden_pooling import pool

    hidden = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)  # row 0: 0..4, row 1: 5..9
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])                      # row 0 left padded
    gen_mask = torch.tensor([[1, 0], [1, 1]])                               # row 0 stopped after one token
    out = pool(hidden, prompt_mask, gen_mask, POOLINGS)
    assert out["eos"].flatten().tolist() == [3.0, 9.0]
    assert out["last_prompt"].flatten().tolist() == [2.0, 7.0]
    assert out["mean_generated"].flatten().tolist() == [3.0, 8.5]
    assert out["mean_all"].flatten().tolist() == [2.0, 7.0]  # (1+2+3)/3 and (5+...+9)/5


def test_no_describable_item_is_a_clear_error(qwen, tmp_path):
    from modalrec.errors import FeatureError

    folder = tmp_path / "d"
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["x", "y"]})
    Dataset.from_frames(pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"]}), items).save(folder)
    with pytest.raises(FeatureError, match="no item can be described.*no image"):
        run_descriptions(folder, qwen, SHORT, progress=False)
    with pytest.raises(FeatureError, match="not a modalrec data set"):
        run_descriptions(tmp_path / "nothing", qwen, SHORT, progress=False)
