"""`modalrec features extract | list | inspect | fuse`: item content as stored feature matrices."""

from __future__ import annotations

import argparse

import numpy as np

from modalrec.cli.format import print_table, split_list
from modalrec.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("features", help="extract, list, inspect and fuse item features")
    commands = group.add_subparsers(dest="features_command", metavar="COMMAND")

    extract = commands.add_parser("extract", help="encode item text or images into DIR/features/NAME")
    extract.add_argument("dataset", metavar="DIR")
    extract.add_argument("--extractor", required=True,
                         help="minilm, mpnet, efficientnet-lite0, st:PATH, hf-image:PATH, clip-image:PATH, "
                              "clip-text:PATH (see `modalrec features extractors`)")
    extract.add_argument("--name", help="feature name (default: derived from the extractor)")
    extract.add_argument("--fields", help="text fields in order, comma-separated (default: all, title first)")
    extract.add_argument("--template", help="text template, e.g. '{title}. {description}'")
    extract.add_argument("--max-tokens", type=int, help="truncate texts to N tokens (default: the model's)")
    extract.add_argument("--layer", type=int, help="hf-image: hidden layer to pool (default: last)")
    extract.add_argument("--pooling", choices=["pooler", "cls", "mean"], help="hf-image: how to pool a layer")
    extract.add_argument("--batch-size", type=int)
    extract.add_argument("--impute", choices=["mean", "zero"], default="mean",
                         help="fill for items without content (default mean; the mask keeps them marked)")
    extract.add_argument("--device", default="cpu")
    extract.add_argument("--force", action="store_true", help="recompute even when cached")
    extract.add_argument("--backend", choices=["local", "ray"], default="local",
                         help="ray: encode batches on a Ray actor pool (pip install 'modalrec[ray]')")
    extract.add_argument("--address", help="Ray cluster address, e.g. auto (default: start a local Ray)")
    extract.add_argument("--workers", type=int, help="Ray actors, one model each (default: as many as fit)")
    extract.set_defaults(func=_extract)

    listing = commands.add_parser("list", help="stored features of a data set")
    listing.add_argument("dataset", metavar="DIR")
    listing.set_defaults(func=_list)

    extractors = commands.add_parser("extractors", help="available extractors")
    extractors.set_defaults(func=_extractors)

    inspect = commands.add_parser("inspect", help="neighbours, CKA between modalities, overlap with behaviour")
    inspect.add_argument("dataset", metavar="DIR")
    inspect.add_argument("--features", help="feature names, comma-separated (default: all)")
    inspect.add_argument("--items", help="item ids to show neighbours of (default: the 3 most popular)")
    inspect.add_argument("-k", type=int, default=10)
    inspect.set_defaults(func=_inspect)

    fuse = commands.add_parser("fuse", help="combine stored features into a new one")
    fuse.add_argument("dataset", metavar="DIR")
    fuse.add_argument("--features", required=True, help="feature names, comma-separated")
    fuse.add_argument("--method", choices=["concat", "mean", "sum", "product"], default="concat")
    fuse.add_argument("--dim", type=int, help="project each modality to N dimensions first")
    fuse.add_argument("--projection", choices=["gaussian", "pca"], default="gaussian")
    fuse.add_argument("--normalize", choices=["l2", "zscore"], help="normalise each modality first")
    fuse.add_argument("--pca", type=int, metavar="N", help="reduce the fused matrix to N principal components")
    fuse.add_argument("--mask", choices=["any", "all"], default="any",
                      help="an item has content if any / all modalities have it")
    fuse.add_argument("--seed", type=int, default=0)
    fuse.add_argument("--name", required=True)
    fuse.set_defaults(func=_fuse)

    group.set_defaults(func=lambda args: _help(group))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _extract(args: argparse.Namespace) -> int:
    from modalrec.features.extraction import extract
    from modalrec.features.registry import ExtractorOptions, get_extractor

    fields = split_list(args.fields) if args.fields else None
    options = ExtractorOptions(fields=tuple(fields) if fields else None, template=args.template,
                               max_tokens=args.max_tokens, layer=args.layer, pooling=args.pooling,
                               device=args.device)
    extractor = get_extractor(args.extractor, options)
    encoder = None
    if args.backend == "ray":
        from modalrec.features.ray_extraction import RayBatchEncoder

        encoder = RayBatchEncoder(workers=args.workers, address=args.address)
    result = extract(args.dataset, extractor, name=args.name, batch_size=args.batch_size,
                     impute_method=args.impute, force=args.force, encode_batches=encoder)
    manifest = result.features.manifest
    if result.cache_hit:
        print(f"{result.name}: cache hit, nothing recomputed ({result.path})")
    else:
        resumed = f", resumed {result.resumed_items}" if result.resumed_items else ""
        rate = manifest.get("items_per_second")
        print(f"{result.name}: {manifest['n_items']} items, dim {manifest['dim']}, "
              f"{manifest['n_with_content']} with content, {manifest['n_no_content']} without, "
              f"{manifest['n_failed']} failed; computed {result.computed_items}{resumed}"
              f"{f' ({rate} items/s)' if rate else ''} -> {result.path}")
    for failure in manifest.get("failed_examples", [])[:5]:
        print(f"  failed {failure['item_id']}: {failure['error']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from modalrec.features.store import FeatureStore

    store = FeatureStore(args.dataset)
    rows = []
    for name in store.names():
        m = store.manifest(name)
        rows.append([name, m["dim"], f"{m['n_with_content']}/{m['n_items']}", m.get("extractor", "?"),
                     m.get("impute", "-"), m.get("n_failed", 0)])
    if not rows:
        print(f"no features in {store.root}; extract some with `modalrec features extract DIR --extractor minilm`")
        return 0
    print_table(["name", "dim", "with content", "extractor", "impute", "failed"], rows)
    return 0


def _extractors(args: argparse.Namespace) -> int:
    from modalrec.features.registry import extractor_names

    print_table(["extractor", "what"], extractor_names())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from modalrec.data.dataset import Dataset
    from modalrec.features.diagnostics import inspect
    from modalrec.features.store import FeatureStore

    dataset = Dataset.load(args.dataset)
    store = FeatureStore(args.dataset)
    names = split_list(args.features) if args.features else store.names()
    if not names:
        raise ConfigError("this data set has no features", where=str(args.dataset),
                          hint="extract some with `modalrec features extract DIR --extractor minilm`")
    features = store.load_set(names)
    train = dataset.split.train if dataset.split is not None else dataset.interactions
    if args.items:
        rows = dataset.item_index(split_list(args.items))
    else:
        rows = np.argsort(-train.item_counts(), kind="stable")[:3]
    report = inspect(features, items=rows, k=args.k, train=train)
    source = "the training split" if dataset.split is not None else "all interactions (no split)"

    label = _item_labels(dataset)
    for row in rows:
        print(f"\nneighbours of {label(row)}")
        for name, (index, sims) in report["neighbours"].items():
            if name in features and not features[name].mask[row]:
                print(f"  {name}: (this item has no content here)")
                continue
            position = int(np.flatnonzero(rows == row)[0])
            shown = [f"{label(j)} ({s:.2f})" for j, s in zip(index[position], sims[position]) if j >= 0]
            print(f"  {name}: " + ("; ".join(shown) if shown else "(no content)"))
    print("\nlinear CKA between modalities (items with content in both)")
    print_table(["", *names], [[a, *[f"{report['cka'][a][b]:.3f}" for b in names]] for a in names])
    print(f"\nagreement with co-consumption ({source}): content kNN vs item-item cosine kNN, k={args.k}")
    print_table(["features", "items", f"overlap@{args.k}", "jaccard", "chance"],
                [[n, o["n_items"], f"{o['overlap']:.4f}", f"{o['jaccard']:.4f}", f"{o['chance']:.4f}"]
                 for n, o in report["overlap"].items()])
    return 0


def _item_labels(dataset):
    ids = dataset.item_ids.astype(str)
    titles = dataset.items["title"].astype(str).tolist() if "title" in dataset.items else None

    def label(index: int) -> str:
        return f"{ids[index]} {titles[index][:40]!r}" if titles else ids[index]

    return label


def _fuse(args: argparse.Namespace) -> int:
    from modalrec.features.fusion import fuse
    from modalrec.features.store import FeatureStore, check_name

    store = FeatureStore(args.dataset)
    name = check_name(args.name)
    features = store.load_set(split_list(args.features))
    fused = fuse(features, args.method, dim=args.dim, projection=args.projection, normalize_each=args.normalize,
                 pca=args.pca, mask_rule=args.mask, seed=args.seed)
    fused.manifest["impute"] = "inherited"
    path = store.save(name, fused, store.item_ids())
    print(f"{name}: {fused.n_items} items, dim {fused.dim}, {int(fused.mask.sum())} with content -> {path}")
    return 0
