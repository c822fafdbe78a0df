"""``modalrec data``: synthesize, import, split, inspect and download data sets.

Thin: parse, call the library, print. Every import builds the whole data set in memory first and
only then writes it (``modalrec.data.output``), so bad input never leaves a half-written folder.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from modalrec.errors import ConfigError, DependencyError

FORMATS = ("folder", "elliot", "mmrec", "movielens", "amazon2023")
# options (argparse dest names) that each --format accepts besides --out and the filters
FORMAT_OPTIONS = {
    "folder": {"interactions", "items", "images", "user_col", "item_col", "rating_col", "timestamp_col", "sep",
               "dedup", "no_verify_images"},
    "elliot": {"train", "valid", "test", "sep", "dedup"},
    "mmrec": {"path", "inter", "dedup"},
    "movielens": {"path", "posters", "overviews", "no_verify_images"},
    "amazon2023": {"reviews", "meta", "text_fields", "download_images", "drop_failed_images", "workers"},
}
REQUIRED = {"folder": ("interactions",), "elliot": ("train", "valid", "test"), "mmrec": (),
            "movielens": ("path",), "amazon2023": ("reviews", "meta")}
FILTERS = {"k_core", "user_k", "item_k", "min_rating"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="import, synthesize, split and inspect data sets",
                                   description="Import, synthesize, split and inspect data sets.")
    parser.set_defaults(func=lambda args: _usage(parser))
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    _register_synth(actions)
    _register_import(actions)
    _register_split(actions)
    _register_info(actions)
    _register_download(actions)


# --- synth ---------------------------------------------------------------------------------------
def _register_synth(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("synth", help="generate a synthetic data set with known content effects")
    p.add_argument("--out", required=True, type=Path, help="folder to create")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--users", type=int, help="number of users")
    p.add_argument("--items", type=int, help="number of items")
    p.add_argument("--content-weight", type=float, help="how much item content drives preferences (0..1)")
    p.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    from modalrec.data.output import output_state

    module = _lazy("modalrec.data.sources.synthetic", "synthetic")
    output_state(args.out)
    given = {"seed": args.seed, "n_users": args.users, "n_items": args.items, "content_weight": args.content_weight}
    for name, value in given.items():
        if value is not None and name != "content_weight" and value < (0 if name == "seed" else 1):
            raise ConfigError(f"must be {'>= 0' if name == 'seed' else 'at least 1'}, got {value}",
                              where=f"--{name.removeprefix('n_')}")
    config = module.SyntheticConfig(**{k: v for k, v in given.items() if v is not None})
    dataset = module.synthesize(args.out, config)
    _print_summary("synthesized", dataset, args.out)
    return 0


# --- import --------------------------------------------------------------------------------------
def _register_import(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("import", help="import a data set from files",
                           description="Import a data set; it is validated completely before anything is written.")
    p.add_argument("--format", required=True, choices=FORMATS, dest="format")
    p.add_argument("--out", required=True, type=Path, help="data set folder to create (or replace)")
    g = p.add_argument_group("folder")
    g.add_argument("--interactions", type=Path, help="interactions CSV/TSV with a header")
    g.add_argument("--items", type=Path, help="items CSV/TSV/JSONL (item id + content columns)")
    g.add_argument("--images", type=Path, help="folder of <item_id>.<jpg|jpeg|png|webp>")
    g.add_argument("--user-col", help="user column (default user_id)")
    g.add_argument("--item-col", help="item column (default item_id)")
    g.add_argument("--rating-col", help="rating column (default: 'rating' if present)")
    g.add_argument("--timestamp-col", help="timestamp column (default: 'timestamp' if present)")
    g.add_argument("--sep", help="field separator, e.g. ',' or tab (default: from the extension)")
    g.add_argument("--dedup", choices=("last", "first", "mean"),
                   help="duplicate (user, item) rows: keep the latest (default), the first, or average")
    g.add_argument("--no-verify-images", action="store_true", help="do not open images to check them")
    g = p.add_argument_group("elliot")
    g.add_argument("--train", type=Path, help="headerless user<TAB>item<TAB>rating training file")
    g.add_argument("--valid", type=Path, help="validation file")
    g.add_argument("--test", type=Path, help="test file")
    g = p.add_argument_group("mmrec / movielens")
    g.add_argument("--path", type=Path, help="mmrec: folder with one .inter and *_feat.npy; movielens: ml-100k")
    g.add_argument("--inter", type=Path, help="mmrec: a single .inter file")
    g.add_argument("--posters", type=Path, help="movielens: folder of <movie_id>.jpg")
    g.add_argument("--overviews", type=Path, help="movielens: CSV with movie_id and overview columns")
    g = p.add_argument_group("amazon2023")
    g.add_argument("--reviews", type=Path, help="reviews JSONL(.gz)")
    g.add_argument("--meta", type=Path, help="item metadata JSONL(.gz)")
    g.add_argument("--text-fields", help="comma-separated metadata fields used as text (default title,description)")
    g.add_argument("--download-images", action="store_true", help="download the item images")
    g.add_argument("--drop-failed-images", action="store_true", help="drop items whose image fails to download")
    g.add_argument("--workers", type=int, help="parallel image downloads (default 16)")
    g = p.add_argument_group("filters (applied before any split)")
    g.add_argument("--min-rating", type=float, help="keep interactions with rating >= T (implicit feedback)")
    g.add_argument("--k-core", type=int, help="iterative k-core: users and items with at least N interactions")
    g.add_argument("--user-k", type=int, help="k-core threshold for users only (overrides --k-core)")
    g.add_argument("--item-k", type=int, help="k-core threshold for items only (overrides --k-core)")
    p.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from modalrec.data.output import output_state, save_dataset

    _check_import_options(args)
    output_state(args.out)  # refuse a foreign folder before reading anything
    if args.format == "amazon2023":
        return _import_amazon2023(args)
    dataset, features = _read_source(args)
    user_k = item_k = None
    if args.k_core is not None or args.user_k is not None or args.item_k is not None:
        base = args.k_core or 0  # --user-k alone filters users only
        user_k = args.user_k if args.user_k is not None else base
        item_k = args.item_k if args.item_k is not None else base
    if args.min_rating is not None or user_k is not None:
        dataset, features = _filter(dataset, features, args.min_rating, user_k, item_k)
    save_dataset(dataset, args.out, features)
    _print_summary(f"imported {args.format}", dataset, args.out)
    for name, feats in features.items():
        print(f"features {name}: {feats.n_items} x {feats.dim} ({int(feats.mask.sum())} items with content)")
    return 0


def _check_import_options(args: argparse.Namespace) -> None:
    accepted = FORMAT_OPTIONS[args.format] | FILTERS
    if args.format == "amazon2023":
        accepted = accepted - {"user_k", "item_k"}
    for dest in sorted(set().union(*FORMAT_OPTIONS.values()) | FILTERS):
        value = getattr(args, dest)
        if dest not in accepted and value not in (None, False):
            raise ConfigError(f"does not apply to --format {args.format}", where=_flag(dest),
                              hint=f"see `modalrec data import --help` for the {args.format} options")
    missing = [_flag(d) for d in REQUIRED[args.format] if getattr(args, d) is None]
    if missing:
        raise ConfigError(f"--format {args.format} needs {', '.join(missing)}", where=missing[0])
    if args.format == "mmrec" and (args.path is None) == (args.inter is None):
        raise ConfigError("--format mmrec needs either --path DIR or --inter FILE", where="--path")
    for dest in ("k_core", "user_k", "item_k", "workers"):
        value = getattr(args, dest)
        if value is not None and value < (1 if dest == "workers" else 0):
            raise ConfigError(f"must be {'at least 1' if dest == 'workers' else '>= 0'}, got {value}",
                              where=_flag(dest))


def _read_source(args: argparse.Namespace) -> tuple[Any, dict]:
    dedup = args.dedup or "last"
    verify = not args.no_verify_images
    if args.format == "folder":
        from modalrec.data.sources.folder import import_folder

        return import_folder(
            args.interactions, args.items, args.images, user_col=args.user_col or "user_id",
            item_col=args.item_col or "item_id", rating_col=args.rating_col,
            timestamp_col=args.timestamp_col, sep=args.sep, dedup=dedup, verify_images=verify), {}
    if args.format == "elliot":
        from modalrec.data.sources.elliot import import_elliot

        return import_elliot(args.train, args.valid, args.test, sep=args.sep or "\t", dedup=dedup), {}
    if args.format == "mmrec":
        from modalrec.data.sources.mmrec import import_mmrec

        return import_mmrec(args.path, inter=args.inter, dedup=dedup)
    from modalrec.data.sources.movielens import import_movielens

    return import_movielens(args.path, posters=args.posters, overviews=args.overviews, verify_images=verify), {}


def _filter(dataset: Any, features: dict, min_rating: float | None, user_k: int | None,
            item_k: int | None) -> tuple[Any, dict]:
    """Filter, and keep the feature rows aligned to the surviving items."""
    from modalrec.data.filtering import apply_filters
    from modalrec.features.features import Features

    filtered = apply_filters(dataset, min_rating_threshold=min_rating, user_k=user_k, item_k=item_k)
    kept = dataset.item_index(filtered.item_ids)
    aligned = {name: Features(f.matrix[kept], f.mask[kept], {**f.manifest, "rows_kept_after_filtering": len(kept)})
               for name, f in features.items()}
    return filtered, aligned


def _import_amazon2023(args: argparse.Namespace) -> int:
    module = _lazy("modalrec.data.sources.amazon2023", "amazon2023")
    k_core = 5 if args.k_core is None else args.k_core
    options: dict[str, Any] = {"k_core": k_core, "download_images": args.download_images,
                               "drop_failed_images": args.drop_failed_images}
    if args.text_fields:
        options["text_fields"] = tuple(f.strip() for f in args.text_fields.split(",") if f.strip())
    if args.workers is not None:
        options["workers"] = args.workers
    if args.min_rating is not None:
        options["min_rating"] = args.min_rating  # applied there before the k-core
    dataset = module.import_amazon2023(args.reviews, args.meta, args.out, **options)
    _print_summary("imported amazon2023", dataset, args.out)
    return 0


# --- split ---------------------------------------------------------------------------------------
def _register_split(actions: argparse._SubParsersAction) -> None:
    from modalrec.data.splitting import PROTOCOLS

    p = actions.add_parser("split", help="split a data set into train / valid / test")
    p.add_argument("dir", type=Path, help="data set folder")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--ratios", help="train,valid,test shares summing to 1 (default 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--replace", action="store_true", help="replace an imported (fixed) split")
    p.set_defaults(func=_split)


def _split(args: argparse.Namespace) -> int:
    from modalrec.data.dataset import Dataset
    from modalrec.data.splitting import make_split, parse_ratios

    if args.ratios is not None and args.protocol != "leave-one-out":
        parse_ratios(args.ratios)  # a bad --ratios fails before the data is read
    dataset = Dataset.load(args.dir)
    if dataset.split is not None and dataset.split.protocol == "fixed" and not args.replace:
        raise ConfigError("this data set has an imported (fixed) split; splitting again would discard it",
                          where=str(args.dir), hint="pass --replace to overwrite it")
    split = make_split(dataset.interactions, args.protocol, args.ratios, args.seed)
    dataset.save_split(split)
    sizes = split.sizes()
    cold = "" if split.cold_items is None else f", {len(split.cold_items)} cold items"
    print(f"split {args.protocol}: train {sizes['train']} / valid {sizes['valid']} / test {sizes['test']}{cold}")
    return 0


# --- info ----------------------------------------------------------------------------------------
def _register_info(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("info", help="counts, density and split sizes of a data set")
    p.add_argument("dir", type=Path, help="data set folder")
    p.add_argument("--json", action="store_true", help="print the information as JSON")
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from modalrec.data.dataset import Dataset

    dataset = Dataset.load(args.dir)
    info = dataset.info()
    info["source"] = dataset.provenance.get("source")
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"data set      {args.dir}")
    print(f"source        {info['source'] or 'unknown'}")
    print(f"users         {info['users']}")
    print(f"items         {info['items']}")
    print(f"interactions  {info['interactions']}")
    print(f"density       {info['density']:.6f}")
    print(f"ratings       {'yes' if info['has_ratings'] else 'no'}")
    print(f"timestamps    {'yes' if info['has_timestamps'] else 'no'}")
    print(f"text fields   {', '.join(info['text_fields']) or 'none'}")
    print(f"images        {info['images']}")
    split = info.get("split")
    if split:
        print(f"split         {split['protocol']}: train {split['train']} / valid {split['valid']} / "
              f"test {split['test']}")
    else:
        print("split         none (run `modalrec data split`)")
    return 0


# --- download ------------------------------------------------------------------------------------
def _register_download(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("download", help="download a public data set (only when you ask)")
    which = p.add_subparsers(dest="dataset", metavar="DATASET")
    p.set_defaults(func=lambda args: _usage(p))
    ml = which.add_parser("ml100k", help="MovieLens-100K from GroupLens")
    ml.add_argument("--out", required=True, type=Path, help="folder to put ml-100k/ in")
    ml.add_argument("--url", help="download from this URL instead of GroupLens (a mirror)")
    ml.add_argument("--checksum", help="expected md5:<hex> or sha256:<hex> (default: GroupLens' md5; "
                                       "none with --url)")
    ml.set_defaults(func=_download_ml100k)
    amazon = which.add_parser("amazon2023", help="one category of Amazon Reviews 2023")
    amazon.add_argument("--category", required=True, help="category name, e.g. Baby_Products")
    amazon.add_argument("--out", required=True, type=Path, help="folder for the raw files")
    amazon.set_defaults(func=_download_amazon2023)


def _download_ml100k(args: argparse.Namespace) -> int:
    from modalrec.data.download import ML100K_CHECKSUM, ML100K_URL, download_ml100k

    url = args.url or ML100K_URL
    checksum = args.checksum if args.checksum is not None else (ML100K_CHECKSUM if args.url is None else None)
    folder = download_ml100k(args.out, url=url, checksum=checksum)
    print(f"MovieLens-100K is in {folder}")
    print(f"next: modalrec data import --format movielens --path {folder} --out DATASET_DIR")
    return 0


def _download_amazon2023(args: argparse.Namespace) -> int:
    module = _lazy("modalrec.data.sources.amazon2023", "amazon2023")
    reviews, meta = module.download_amazon2023(args.category, args.out)
    print(f"reviews: {reviews}")
    print(f"meta:    {meta}")
    print(f"next: modalrec data import --format amazon2023 --reviews {reviews} --meta {meta} --out DATASET_DIR")
    return 0


# --- helpers -------------------------------------------------------------------------------------
def _lazy(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise DependencyError(f"the {what} source is not part of this installation",
                              hint="update modalrec") from None


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _print_summary(verb: str, dataset: Any, out: Path) -> None:
    info = dataset.info()
    print(f"{verb}: {info['users']} users, {info['items']} items, {info['interactions']} interactions "
          f"(density {info['density']:.6f}) -> {out}")
    if "split" in info:
        split = info["split"]
        print(f"split {split['protocol']}: train {split['train']} / valid {split['valid']} / test {split['test']}")
