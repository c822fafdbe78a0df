"""The synthetic world: modalrec's embedded default data set, with a known answer.

Items carry latent attributes. Some are shown only in the picture (colour, pattern, emblem), some
only in the text (material, purpose, style) and one in both (category: a silhouette in the picture,
a noun in the text). Users have preferences over attribute values and latent collaborative factors;
each user's affinity for an item mixes the two, and interactions are drawn without replacement from
``softmax(strength * affinity + popularity)`` (Gumbel top-k). Ratings grow with affinity; timestamps
increase per user over a period.

Because the true attributes and preferences are saved with the data (``extras``), audits can check
what a model or a feature extractor really picked up: with ``content_weight`` high, content-aware
recommenders should beat collaborative ones, and the gain should vanish when content is shuffled.

Signal shares are variance shares of the (unit-variance) affinity parts::

    content = sqrt(shared_share) * C_both
              + sqrt(1 - shared_share) * (sqrt(visual_share) * C_image + sqrt(1 - visual_share) * C_text)
    affinity = sqrt(content_weight) * content + sqrt(1 - content_weight) * collaborative

where ``C_group`` is the user's taste for the item's values, summed over the group's attributes and
divided by the square root of their number, and ``collaborative`` is ``u . v / sqrt(n_factors)``
with the user vector scaled to norm ``sqrt(n_factors)``. A user's taste for the values of one
attribute is ``exp(taste_skew * z)``, ``z ~ N(0, 1)``, standardised over the values: each user loves
a few values and is lukewarm about the rest. Such peaked tastes are what keeps content ahead of
pure collaborative filtering at high ``content_weight``: one loved colour or material spans many
items, most of which a user has never touched.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import PIL
from tqdm.auto import tqdm

from modalrec import io
from modalrec.data.dataset import Dataset
from modalrec.data.output import output_state
from modalrec.data.sources import synthetic_render as render
from modalrec.data.sources import synthetic_text as text
from modalrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SOURCE = "synthetic"

#: attribute -> (modality, values); modality is "image" (picture only), "text" or "both"
ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "category": ("both", render.CATEGORIES),
    "colour": ("image", tuple(render.COLOURS)),
    "pattern": ("image", render.PATTERNS),
    "emblem": ("image", render.EMBLEMS),
    "material": ("text", tuple(text.MATERIALS)),
    "purpose": ("text", tuple(text.PURPOSES)),
    "style": ("text", tuple(text.STYLES)),
}
MODALITIES = ("both", "image", "text")

# independent random streams, so that e.g. changing the number of users leaves the items alone
_ITEMS, _USERS, _CHOICE, _RATINGS, _TIMES, _TEXT, _PICTURE = range(7)
_BLOCK = 4_000_000  # affinity entries per block of users (memory bound, not part of the result)


@dataclass
class SyntheticConfig:
    """Knobs of the synthetic world; the defaults give about 2,000 users x 1,000 items x 40,000
    interactions."""

    n_users: int = 2000
    n_items: int = 1000
    seed: int = 0
    #: variance share of content in the affinity: 0 = purely collaborative, 1 = purely content
    content_weight: float = 0.5
    #: share of the content signal carried by image-only attributes vs text-only ones
    visual_share: float = 0.5
    #: Zipf exponent of item base popularity (weight ~ rank^-skew); 0 = flat popularity
    popularity_skew: float = 1.0
    #: mean number of interactions per user (log-normal activity, floored at min_user_interactions)
    interactions_per_user: float = 20.0
    #: side in pixels of the square PNG pictures
    image_size: int = 128
    #: share of the content signal carried by the attribute shown in both modalities (category)
    shared_share: float = 0.2
    #: inverse temperature of choice: how sharply users prefer high-affinity items
    preference_strength: float = 5.0
    #: how peaked tastes are: a user's liking for a value is exp(taste_skew * z), z ~ N(0, 1),
    #: standardised; > 0 means each user loves a few values per attribute, 0 gives Gaussian tastes
    taste_skew: float = 1.0
    #: dimension of the latent collaborative factors
    n_factors: int = 16
    #: every user gets at least this many interactions (capped by half the catalogue)
    min_user_interactions: int = 5
    #: sigma of the log-normal spread of user activity
    activity_spread: float = 0.7
    #: standard deviation of the noise added to affinity before it becomes a rating
    rating_noise: float = 0.5
    #: shares of ratings 1..5 (highest-affinity interactions get the highest ratings)
    rating_shares: tuple[float, ...] = (0.05, 0.08, 0.17, 0.30, 0.40)
    #: Unix time the interaction period starts (2015-01-01 UTC) and its length in days
    start_time: int = 1_420_070_400
    period_days: int = 730

    def validate(self) -> None:
        """Raise ConfigError naming the first bad knob (``where`` is the knob, ``hint`` the fix)."""

        def bad(key: str, message: str, hint: str) -> ConfigError:
            return ConfigError(f"{message}, got {getattr(self, key)!r}", where=f"synthetic config key {key!r}",
                               hint=hint)

        def number(value: object) -> bool:
            return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool) \
                and bool(np.isfinite(value))

        for key in ("n_users", "n_items", "image_size", "n_factors", "min_user_interactions", "period_days"):
            value = getattr(self, key)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise bad(key, "must be a positive integer", f"pass a whole number >= 1 for {key}")
        if self.n_items < 2:
            raise bad("n_items", "must be at least 2", "use a catalogue of two items or more")
        if not 8 <= self.image_size <= 2048:
            raise bad("image_size", "must be between 8 and 2048 pixels", "128 is the default")
        for key in ("content_weight", "visual_share", "shared_share"):
            value = getattr(self, key)
            if not (number(value) and 0.0 <= value <= 1.0):
                raise bad(key, "must be a number in [0, 1]", f"0 and 1 are the extremes of {key}")
        for key in ("popularity_skew", "preference_strength", "taste_skew", "activity_spread", "rating_noise"):
            value = getattr(self, key)
            if not (number(value) and value >= 0):
                raise bad(key, "must be a finite number >= 0", f"use 0 to switch {key} off")
        if self.taste_skew > 5:
            raise bad("taste_skew", "must be at most 5 (tastes would overflow)", "the default is 1")
        if not (number(self.interactions_per_user) and self.interactions_per_user > 0):
            raise bad("interactions_per_user", "must be a number > 0", "the default is 20")
        try:
            shares = np.asarray(self.rating_shares, dtype=float)
        except (TypeError, ValueError):
            shares = np.zeros(0)
        if shares.shape != (5,) or not np.isfinite(shares).all() or (shares < 0).any() \
                or not np.isclose(shares.sum(), 1.0):
            raise bad("rating_shares", "must be five non-negative shares summing to 1",
                      "e.g. (0.05, 0.08, 0.17, 0.3, 0.4)")
        if not isinstance(self.seed, int | np.integer) or isinstance(self.seed, bool) or self.seed < 0:
            raise bad("seed", "must be a non-negative integer", "pass e.g. --seed 0")
        if not isinstance(self.start_time, int | np.integer) or isinstance(self.start_time, bool):
            raise bad("start_time", "must be an integer Unix time", "the default is 1420070400 (2015-01-01)")


# --- the world ------------------------------------------------------------------------------------------

@dataclass
class World:
    """The latent truth behind a generated data set (item attribute codes, user preferences)."""

    item_values: dict[str, np.ndarray]  # attribute -> (n_items,) value index
    brands: np.ndarray  # (n_items,) index into text.BRANDS
    log_popularity: np.ndarray  # (n_items,)
    item_factors: np.ndarray  # (n_items, n_factors)
    preferences: dict[str, np.ndarray]  # attribute -> (n_users, n_values), standardised per user
    user_factors: np.ndarray  # (n_users, n_factors), rows of norm sqrt(n_factors)
    activity: np.ndarray  # (n_users,) interactions per user


def _rng(config: SyntheticConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, *stream])


def sample_world(config: SyntheticConfig) -> World:
    """Draw item attributes and popularity (item stream) and user tastes (user stream)."""
    items = _rng(config, _ITEMS)
    n_items, n_users = config.n_items, config.n_users
    values = {name: items.integers(len(vals), size=n_items) for name, (_, vals) in ATTRIBUTES.items()}
    brands = items.integers(len(text.BRANDS), size=n_items)
    ranks = items.permutation(n_items) + 1
    log_popularity = -config.popularity_skew * np.log(ranks)
    item_factors = items.standard_normal((n_items, config.n_factors))

    users = _rng(config, _USERS)
    preferences = {}
    for name, (_, vals) in ATTRIBUTES.items():
        raw = users.standard_normal((n_users, len(vals)))
        if config.taste_skew > 0:
            raw = np.exp(config.taste_skew * raw)
        raw -= raw.mean(axis=1, keepdims=True)
        preferences[name] = raw / np.maximum(raw.std(axis=1, keepdims=True), 1e-9)
    factors = users.standard_normal((n_users, config.n_factors))
    factors *= np.sqrt(config.n_factors) / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-9)
    sigma = config.activity_spread
    raw_activity = users.lognormal(np.log(config.interactions_per_user) - sigma**2 / 2, sigma, size=n_users)
    cap = max(1, min(n_items, max(config.min_user_interactions, n_items // 2)))
    if config.interactions_per_user > cap:
        log.warning("interactions_per_user=%s exceeds half the catalogue; capping each user at %d interactions",
                    config.interactions_per_user, cap)
    activity = np.clip(np.rint(raw_activity), min(config.min_user_interactions, cap), cap).astype(np.int64)
    return World(values, brands, log_popularity, item_factors, preferences, factors, activity)


def _group_weights(config: SyntheticConfig) -> dict[str, float]:
    """Weight of each attribute in the content affinity (variance shares, see the module doc)."""
    groups = {m: [a for a, (mod, _) in ATTRIBUTES.items() if mod == m] for m in MODALITIES}
    share = {
        "both": config.shared_share,
        "image": (1 - config.shared_share) * config.visual_share,
        "text": (1 - config.shared_share) * (1 - config.visual_share),
    }
    return {a: float(np.sqrt(share[m] / len(groups[m]))) for m in MODALITIES for a in groups[m]}


def affinity(world: World, config: SyntheticConfig, users: np.ndarray) -> np.ndarray:
    """(len(users), n_items) affinity: standardised mix of content taste and collaborative factors."""
    content = np.zeros((len(users), config.n_items))
    for name, weight in _group_weights(config).items():
        if weight:
            content += weight * world.preferences[name][users][:, world.item_values[name]]
    collaborative = world.user_factors[users] @ world.item_factors.T / np.sqrt(config.n_factors)
    cw = config.content_weight
    return np.sqrt(cw) * content + np.sqrt(1 - cw) * collaborative


def sample_interactions(world: World, config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users, items and affinities of the drawn interactions (Gumbel top-k, no repeats per user).

    Each user's Gumbel noise comes from its own stream, so the result does not depend on the
    block size used to bound memory.
    """
    n_items = config.n_items
    block = max(1, _BLOCK // n_items)
    out_users, out_items, out_affinity = [], [], []
    for start in range(0, config.n_users, block):
        users = np.arange(start, min(start + block, config.n_users))
        aff = affinity(world, config, users)
        noise = np.stack([_rng(config, _CHOICE, int(u)).gumbel(size=n_items) for u in users])
        keys = config.preference_strength * aff + world.log_popularity + noise
        k = world.activity[users]
        k_max = int(k.max())
        top = np.argpartition(-keys, k_max - 1, axis=1)[:, :k_max] if k_max < n_items else \
            np.tile(np.arange(n_items), (len(users), 1))
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        keep = np.arange(k_max)[None, :] < k[:, None]
        rows = np.broadcast_to(users[:, None], top.shape)[keep]
        cols = top[keep]
        out_users.append(rows)
        out_items.append(cols)
        out_affinity.append(aff[rows - start, cols])
    return np.concatenate(out_users), np.concatenate(out_items), np.concatenate(out_affinity)


def ratings_from_affinity(aff: np.ndarray, config: SyntheticConfig) -> np.ndarray:
    """1..5 stars: noisy affinity cut at the quantiles that give ``rating_shares``."""
    noisy = aff + _rng(config, _RATINGS).normal(0.0, config.rating_noise, size=len(aff)) if len(aff) else aff
    cuts = np.quantile(noisy, np.cumsum(config.rating_shares)[:-1]) if len(aff) else np.zeros(4)
    return (1 + np.searchsorted(cuts, noisy, side="right")).astype(np.float32)


def timestamps_for(users: np.ndarray, config: SyntheticConfig) -> np.ndarray:
    """Strictly increasing Unix times per user, in random item order, within the period.

    Each user is active over a random window of the period; events fall at uniform random points
    of it (plus their rank in seconds, which keeps them strictly increasing).
    """
    rng = _rng(config, _TIMES)
    n_users = config.n_users
    counts = np.bincount(users, minlength=n_users)
    period = config.period_days * 86_400
    span = np.maximum(period * rng.uniform(0.1, 1.0, size=n_users) - counts, 1.0)
    begin = config.start_time + np.floor(rng.uniform(0.0, 1.0, size=n_users) * (period - counts - span))
    position = rng.uniform(0.0, 1.0, size=len(users))
    order = np.lexsort((position, users))  # by user, then by random position: a random item order
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(users)) - first[users[order]]
    u = users[order]
    times = np.empty(len(users), dtype=np.int64)
    times[order] = (begin[u] + np.floor(position[order] * span[u]) + rank).astype(np.int64)
    return times


# --- content ------------------------------------------------------------------------------------------

def _ids(prefix: str, n: int) -> np.ndarray:
    width = len(str(max(n - 1, 0)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


def value_of(world: World, attribute: str, item: int) -> str:
    return ATTRIBUTES[attribute][1][int(world.item_values[attribute][item])]


def image_spec(world: World, config: SyntheticConfig, item: int) -> render.ImageSpec:
    """What item ``item``'s picture shows: its image and shared attributes, and jitter."""
    fields = {a: value_of(world, a, item) for a, (m, _) in ATTRIBUTES.items() if m in ("image", "both")}
    return render.ImageSpec(**fields, nuisance=render.Nuisance.sample(_rng(config, _PICTURE, item)))


def text_spec(world: World, item: int) -> text.TextSpec:
    """What item ``item``'s text states: its text and shared attributes, and a brand."""
    fields = {a: value_of(world, a, item) for a, (m, _) in ATTRIBUTES.items() if m in ("text", "both")}
    return text.TextSpec(**fields, brand=text.BRANDS[int(world.brands[item])])


def _render_images(world: World, config: SyntheticConfig, paths: list[Path]) -> None:
    for item, path in enumerate(tqdm(paths, desc="synthetic images", unit="img", disable=None, leave=False)):
        data = render.render_png(image_spec(world, config, item), config.image_size)
        with io.atomic_path(path) as tmp:
            tmp.write_bytes(data)


def _tables(world: World, config: SyntheticConfig, item_ids: np.ndarray,
            user_ids: np.ndarray) -> dict[str, pd.DataFrame]:
    attributes = pd.DataFrame({"item_id": item_ids.astype(str)})
    for name, (_, vals) in ATTRIBUTES.items():
        attributes[name] = np.asarray(vals, dtype=object)[world.item_values[name]]
    modalities = pd.DataFrame({"attribute": list(ATTRIBUTES), "modality": [m for m, _ in ATTRIBUTES.values()]})
    frames = []
    for name, (_, vals) in ATTRIBUTES.items():
        weights = world.preferences[name]
        frames.append(pd.DataFrame({
            "user_id": np.repeat(user_ids.astype(str), len(vals)),
            "attribute": name,
            "value": np.tile(np.asarray(vals, dtype=object), config.n_users),
            "weight": weights.reshape(-1).astype(np.float32),
        }))
    preferences = pd.concat(frames, ignore_index=True)
    return {"attributes": attributes, "attribute_modalities": modalities, "user_preferences": preferences}


def _simulate(config: SyntheticConfig) -> tuple[World, Dataset]:
    config.validate()
    began = time.perf_counter()
    world = sample_world(config)
    users, items, aff = sample_interactions(world, config)
    ratings = ratings_from_affinity(aff, config)
    times = timestamps_for(users, config)
    user_ids, item_ids = _ids("u", config.n_users), _ids("i", config.n_items)
    titles, descriptions = [], []
    for item in range(config.n_items):
        title, description = text.write(text_spec(world, item), _rng(config, _TEXT, item))
        titles.append(title)
        descriptions.append(description)
    items_table = pd.DataFrame({"item_id": item_ids.astype(str), "title": titles, "description": descriptions})
    frame = pd.DataFrame({
        "user_id": user_ids[users].astype(str), "item_id": item_ids[items].astype(str),
        "rating": ratings, "timestamp": times,
    })
    provenance: dict[str, Any] = {
        "source": SOURCE,
        "format_version": FORMAT_VERSION,
        "generator": __name__,
        "config": dataclasses.asdict(config),
        "pillow": PIL.__version__,  # picture bytes depend on the Pillow version
        "attributes": {a: {"modality": m, "values": list(v)} for a, (m, v) in ATTRIBUTES.items()},
    }
    dataset = Dataset.from_frames(frame, items_table, provenance, where="synthetic world")
    # from_frames sorts user ids; ours are zero-padded and every user has interactions, so the
    # sorted order is the generator's order
    if not np.array_equal(dataset.user_ids, user_ids):
        raise DataError("synthetic user ids out of order", hint="this is a bug in the generator")
    dataset.extras = _tables(world, config, item_ids, dataset.user_ids)
    log.info("synthetic interactions: %d users, %d items, %d interactions in %.1f s",
             dataset.n_users, dataset.n_items, dataset.interactions.nnz, time.perf_counter() - began)
    return world, dataset


def simulate(config: SyntheticConfig) -> Dataset:
    """The world without pictures: interactions, titles, descriptions and the truth tables.

    Identical to :func:`generate` except that ``items`` has no ``image_path`` column; useful when
    only the interactions or the text matter (it is much faster).
    """
    return _simulate(config)[1]


def generate(config: SyntheticConfig, image_dir: Path) -> Dataset:
    """Draw the world, render every picture into ``image_dir`` and return the data set.

    ``items`` has ``item_id``, ``title``, ``description`` and ``image_path`` (the absolute path of
    ``image_dir/<item_id>.png``; ``Dataset.save`` stores it relative to the data set folder).
    ``extras`` holds the truth: ``attributes`` (item_id + one column per attribute),
    ``attribute_modalities`` (attribute, modality in image/text/both) and ``user_preferences``
    (user_id, attribute, value, weight: the standardised taste behind the content affinity).
    """
    world, dataset = _simulate(config)
    began = time.perf_counter()
    image_dir = Path(image_dir).resolve()
    paths = [image_dir / f"{item_id}.png" for item_id in dataset.item_ids]
    _render_images(world, config, paths)
    dataset.items["image_path"] = [str(p) for p in paths]
    log.info("synthetic pictures: %d in %.1f s", len(paths), time.perf_counter() - began)
    return dataset


def synthesize(out: str | Path, config: SyntheticConfig) -> Dataset:
    """Generate the world into a new folder ``out`` (pictures in ``out/images``) and save it there.

    Everything is built in a hidden sibling folder and renamed into place at the end, so a crash
    never leaves a half-written data set. ``out`` must be missing or empty: a folder holding other
    files, or an existing data set, is refused. (A synthetic data set is not replaced in place: its
    item ids repeat across seeds, so features extracted from the old world would silently pass for
    the new one.)
    """
    config.validate()
    out = Path(out)
    if output_state(out) != "new":
        raise DataError("folder already holds a modalrec data set; refusing to overwrite it", where=str(out),
                        hint="choose a new folder, or delete this one first (with its features)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        generate(config, staging / "images").save(staging)
        if out.exists():
            out.rmdir()  # still empty: output_state checked it
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return Dataset.load(out)
