"""``trainwell new CONFIG.toml --recipe NAME``: a complete, commented config from the chapter's guidelines.

With several ``--recipe`` (or ``--experiment``), an experiment file instead: the recipes side by side as the
variants of one study, for ``trainwell run`` and its report.
"""

from __future__ import annotations

import argparse

from trainwell.cli.common import add_json_option, err, out, print_json


def run(args: argparse.Namespace) -> int:
    from trainwell.guidelines.recipes import options_for, parse_shape, write_experiment, write_recipe

    names = args.recipe or ["default"]
    options = options_for(
        args.dataset,
        input_shape=parse_shape(args.input_shape) if args.input_shape else None,
        classes=args.classes,
        depth=args.depth,
        units=args.units,
        data_path=args.data_path,
        max_lr=args.max_lr,
    )
    if options.max_lr is None:
        err.print("finding 1cycle's max_lr with the LR finder (a 100-step sweep on the data, per recipe) ...")
    if len(names) > 1 or args.experiment:
        experiment = write_experiment(args.config, names, options, force=args.force)
        if args.json:
            print_json({"experiment": args.config, "name": experiment.spec.name, "recipes": names})
        else:
            out.print(f"wrote {args.config}: an experiment comparing {', '.join(names)}", soft_wrap=True)
            out.print(f"next: trainwell run {args.config} --quick", soft_wrap=True)
        return 0
    config = write_recipe(args.config, names[0], options, force=args.force)
    if args.json:
        print_json({"config": args.config, "recipe": names[0], "resolved": config.model_dump(mode="json")})
    else:
        out.print(
            f"wrote {args.config} (recipe {names[0]}); every choice in it has a comment saying why",
            soft_wrap=True,
        )
        out.print(f"next: trainwell train {args.config}", soft_wrap=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from trainwell.guidelines.recipes import DEFAULT_UNITS, RECIPES

    p = sub.add_parser("new", help="write a commented config (or experiment) from the chapter's recipes")
    p.add_argument("config", help="the file to write (.toml)")
    p.add_argument(
        "--recipe",
        action="append",
        choices=list(RECIPES),
        metavar="NAME",
        help="which recipe (default: default; `trainwell recipes` lists them); repeat it to write an "
        "experiment comparing them",
    )
    p.add_argument(
        "--experiment",
        action="store_true",
        help="write an experiment file (for `trainwell run`) even for one recipe",
    )
    p.add_argument(
        "--dataset", default="cifar10", help="cifar10 (default), fashion_mnist, imagefolder or npz"
    )
    p.add_argument("--data-path", help="the folder or file of an imagefolder or npz dataset")
    p.add_argument(
        "--input-shape", help="per-sample input shape, e.g. 32,32,3 (known for cifar10, fashion_mnist)"
    )
    p.add_argument("--classes", type=int, help="number of classes (known for cifar10, fashion_mnist)")
    p.add_argument("--depth", type=int, help="hidden layers (default: the recipe's, 20; low-latency 5)")
    p.add_argument(
        "--units", type=int, default=DEFAULT_UNITS, help=f"units per hidden layer (default {DEFAULT_UNITS})"
    )
    p.add_argument(
        "--max-lr",
        type=float,
        help="1cycle's peak learning rate (default: found by the LR finder, which reads the data)",
    )
    p.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    add_json_option(p)
    p.set_defaults(func=run)
