"""``trainwell prune RUN --sparsity 0.9``: a finished run's dense kernels pruned by magnitude, into a new run
folder, with its test accuracy, sparsity and size stored sparse."""

from __future__ import annotations

import argparse

from trainwell.cli.common import add_json_option, key_value_table, out, print_json


def run(args: argparse.Namespace) -> int:
    from trainwell.analysis.derived import prune_run

    result = prune_run(
        args.run,
        sparsity=args.sparsity,
        threshold=args.threshold,
        scope=args.scope,
        finetune_epochs=args.finetune,
        out=args.out,
        progress=not args.quiet and not args.json,
    )
    if args.json:
        print_json(result)
        return 0
    layers = result.pop("layer_sparsity")
    out.print(key_value_table(f"pruned run: {result['run_dir']}", result))
    out.print(key_value_table("sparsity per layer", layers))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a finished run's dense kernels into a new run folder")
    p.add_argument("run", help="the run folder")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--sparsity", type=float, help="the fraction of kernel weights to set to zero, e.g. 0.9")
    how.add_argument(
        "--threshold",
        type=float,
        help="zero every kernel weight with |w| ≤ THRESHOLD (for an l1-regularized model)",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--per-layer",
        dest="scope",
        action="store_const",
        const="per_layer",
        help="prune each layer's kernel to the sparsity (the default, as TF-MOT does)",
    )
    scope.add_argument(
        "--global",
        dest="scope",
        action="store_const",
        const="global",
        help="rank all kernels' weights together (torch's global_unstructured)",
    )
    p.set_defaults(scope="per_layer")
    p.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="fine-tune for EPOCHS with the pruned weights held at zero (default 0)",
    )
    p.add_argument("--out", help="the new run folder (default: RUN-prunedNN beside the run)")
    p.add_argument("--quiet", action="store_true", help="no progress display while fine-tuning")
    add_json_option(p)
    p.set_defaults(func=run)
