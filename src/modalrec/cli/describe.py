"""`modalrec describe run | import | attributes | encode | prompts`: LVLM descriptions as item content."""

from __future__ import annotations

import argparse
import functools

from modalrec.cli.format import print_table, split_list


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("describe", help="describe items with a (vision-)language model; "
                                                   "embeddings, parsed slots, attributes")
    commands = group.add_subparsers(dest="describe_command", metavar="COMMAND")

    run = commands.add_parser("run", help="generate descriptions and hidden-state embeddings (resumable)")
    run.add_argument("dataset", metavar="DIR")
    run.add_argument("--model", required=True, help="hub id (cached) or local folder; with --text-only also "
                                                    "a .gguf file or gemma3-270m")
    run.add_argument("--prompt", required=True, help="built-in prompt name (see `describe prompts`) or a "
                                                     "YAML/JSON prompt file")
    run.add_argument("--pooling", default="eos", help="eos, last_prompt, mean_generated, mean_all "
                                                      "(comma-separated; one feature each)")
    run.add_argument("--layer", type=int, default=-1, help="hidden layer (0 = embeddings, -1 = last)")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    run.add_argument("--batch-size", type=int, default=4)
    run.add_argument("--max-new-tokens", type=int, default=64)
    run.add_argument("--stop", help="stop strings, comma-separated (e.g. for base models that ramble)")
    run.add_argument("--trust-remote-code", action="store_true",
                     help="allow code shipped with the model (e.g. Phi-3.5-vision); read it first")
    run.add_argument("--text-only", action="store_true", help="a text LLM over the item text, no image")
    run.add_argument("--include-fields", help="item text fields to put in the prompt, comma-separated")
    run.add_argument("--hint-field", help="text-only: item column with visual hints (e.g. image labels)")
    run.add_argument("--max-image-side", type=int, help="shrink images to this longer side first")
    run.add_argument("--attn", help="attention implementation (eager, sdpa, flash_attention_2)")
    run.add_argument("--name", help="descriptions name (default: <model>-<prompt>)")
    run.add_argument("--overwrite", action="store_true", help="discard earlier results under this name")
    run.add_argument("--backend", choices=["local", "ray"], default="local",
                     help="ray: a pool of Ray actors, one model each (one GPU each with --device cuda)")
    run.add_argument("--address", help="Ray cluster address, e.g. auto (default: start a local Ray)")
    run.add_argument("--workers", type=int, help="Ray actors (default: as many as the cluster fits)")
    run.set_defaults(func=_run)

    imp = commands.add_parser("import", help="import LVLM outputs from a CSV (Image Name,Keywords or asin,result)")
    imp.add_argument("dataset", metavar="DIR")
    imp.add_argument("--file", required=True)
    imp.add_argument("--prompt", required=True, help="the prompt the outputs answer (for its slots)")
    imp.add_argument("--name", required=True)
    imp.add_argument("--model", help="model label for the manifest (default: external:<file name>)")
    imp.add_argument("--id-column")
    imp.add_argument("--text-column")
    imp.set_defaults(func=_import)

    attrs = commands.add_parser("attributes", help="one-hot slot attributes -> feature attributes-NAME")
    attrs.add_argument("dataset", metavar="DIR")
    attrs.add_argument("--name", required=True, help="descriptions name")
    attrs.add_argument("--top-k", type=int, default=50)
    attrs.add_argument("--threshold", type=float, default=0.45, help="cosine distance threshold for merging")
    attrs.set_defaults(func=_attributes)

    enc = commands.add_parser("encode", help="encode the description text with a text extractor")
    enc.add_argument("dataset", metavar="DIR")
    enc.add_argument("--name", required=True, help="descriptions name")
    enc.add_argument("--extractor", default="minilm", help="text extractor (minilm, mpnet, st:PATH)")
    enc.add_argument("--feature-name", help="feature name (default: desc-<NAME>-<extractor>)")
    enc.add_argument("--batch-size", type=int)
    enc.add_argument("--device", default="cpu")
    enc.set_defaults(func=_encode)

    prompts = commands.add_parser("prompts", help="list the built-in prompts (or show one)")
    prompts.add_argument("prompt", nargs="?")
    prompts.add_argument("--text-only", action="store_true")
    prompts.set_defaults(func=_prompts)

    group.set_defaults(func=lambda args: _help(group))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _run(args: argparse.Namespace) -> int:
    from modalrec.features.descriptions import run_descriptions
    from modalrec.features.lvlm import GenerationSettings, load_lvlm
    from modalrec.features.prompts import load_prompt

    fields = split_list(args.include_fields) if args.include_fields else None
    prompt = load_prompt(args.prompt, include_fields=fields)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens,
                                  stop_strings=tuple(s.encode().decode("unicode_escape")
                                                     for s in split_list(args.stop)) if args.stop else ())
    common = dict(device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                  settings=settings, attn_implementation=args.attn)
    if args.text_only:
        from modalrec.features.llm_text import TextLLMExtractor, load_text_llm

        loader, route = functools.partial(load_text_llm, args.model, **common), TextLLMExtractor.route
    else:
        if args.hint_field:
            from modalrec.errors import ConfigError

            raise ConfigError("--hint-field is for the text-only route", where="--hint-field",
                              hint="add --text-only, or drop --hint-field")
        from modalrec.features.lvlm import LVLMExtractor

        loader = functools.partial(load_lvlm, args.model, max_image_side=args.max_image_side, **common)
        route = LVLMExtractor.route
    if args.backend == "ray":
        from modalrec.features.ray_extraction import RayGenerator

        generator = RayGenerator(loader, route=route, model_id=args.model, dtype=args.dtype, workers=args.workers,
                                 address=args.address, gpus_per_worker=1.0 if args.device.startswith("cuda") else 0.0)
    else:
        generator = loader()
    result = run_descriptions(args.dataset, generator, prompt, name=args.name, poolings=split_list(args.pooling),
                              layer=args.layer, batch_size=args.batch_size, hint_field=args.hint_field,
                              overwrite=args.overwrite)
    m = result.manifest
    state = "up to date" if result.up_to_date else (
        f"{result.computed_items} described now, {result.resumed_items} resumed, {result.seconds:.1f}s")
    print(f"descriptions {result.name}: {m.get('n_with_output')} of {m.get('n_items')} items ({state})")
    _print_compliance(m)
    for name in sorted(result.features):
        print(f"feature {name}: dim {result.features[name].dim}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from modalrec.features.lvlm_import import import_outputs
    from modalrec.features.prompts import load_prompt

    prompt = load_prompt(args.prompt)
    table, report = import_outputs(args.dataset, args.file, prompt, args.name, model=args.model,
                                   id_column=args.id_column, text_column=args.text_column)
    print(f"descriptions {args.name}: {report.matched} of {len(table)} items have an output; "
          f"{report.missing_items} missing; {report.unknown_ids} outputs for unknown items"
          + (f" (e.g. {', '.join(report.unknown_examples)})" if report.unknown_examples else "")
          + (f"; {report.duplicate_ids} repeated ids (first kept)" if report.duplicate_ids else ""))
    from modalrec.features.descriptions import load_descriptions

    _print_compliance(load_descriptions(args.dataset, args.name)[1])
    return 0


def _attributes(args: argparse.Namespace) -> int:
    from modalrec.features.attributes import make_attributes

    fname, result, manifest = make_attributes(args.dataset, args.name, top_k=args.top_k, threshold=args.threshold)
    _print_compliance(manifest)
    rows = [[slot, s["distinct_values"], s["clusters"], s["kept"], s["items_other"], s["items_missing"]]
            for slot, s in result.stats.items()]
    print_table(["slot", "distinct", "clusters", "kept", "items Other", "items missing"], rows)
    print(f"feature {fname}: {len(result.columns)} attributes for {int(result.mask.sum())} items")
    return 0


def _encode(args: argparse.Namespace) -> int:
    from modalrec.features.descriptions import encode_descriptions
    from modalrec.features.store import safe_name

    name = args.feature_name or safe_name(f"desc-{args.name}-{args.extractor}")
    result = encode_descriptions(args.dataset, args.name, args.extractor, name, args.device, args.batch_size)
    print(f"feature {result.name}: dim {result.features.dim}, {int(result.features.mask.sum())} items with a "
          f"description ({'cached' if result.cache_hit else f'{result.computed_items} encoded'})")
    return 0


def _prompts(args: argparse.Namespace) -> int:
    from modalrec.features.prompts import BUILTIN, load_prompt

    source = "text" if args.text_only else "image"
    if args.prompt:
        spec = load_prompt(args.prompt)
        print(spec.template(source))
        print(f"\nsha256: {spec.prompt_hash(source)}")
        return 0
    rows = [[spec.name, spec.kind, ", ".join(spec.slots) or "-", spec.prompt_hash(source)[:12]]
            for spec in BUILTIN.values()]
    print_table(["name", "kind", "slots", "sha256"], rows)
    return 0


def _print_compliance(manifest: dict) -> None:
    comp = manifest.get("compliance")
    if not comp:
        return
    rows = [[slot, f"{v['strict']:.1%}", f"{v['recovered']:.1%}", f"{v['missing']:.1%}"] for slot, v in comp.items()]
    print_table(["slot", "strict", "recovered", "missing"], rows)
