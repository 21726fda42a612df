"""``trainwell summary CONFIG``: the model's layers, output shapes and parameter counts, as Keras counts them."""

from __future__ import annotations

import argparse

from rich.table import Table

from trainwell.cli.common import add_json_option, add_set_option, err, out, print_json


def run(args: argparse.Namespace) -> int:
    from trainwell.config import load_config
    from trainwell.data import dataset_info
    from trainwell.nn.build import build_model
    from trainwell.nn.selfnorm import warn_if_not_self_normalizing
    from trainwell.nn.summary import summarize_model

    config = load_config(args.config, args.set)
    warn_if_not_self_normalizing(config, err)
    if args.input_shape:
        input_shape = tuple(int(d) for d in args.input_shape.split(","))
    else:
        info = dataset_info(config.data.dataset, path=config.data.path, verify=config.data.verify)
        input_shape = tuple(info["input_shape"])
    from trainwell.transfer.phases import describe_transfer, freeze_first_phase

    model = build_model(config.model, input_shape)
    freeze_first_phase(model, config)  # "(frozen)": the layers train.phases' first phase freezes
    summary = summarize_model(model, input_shape)
    summary["transfer"] = describe_transfer(config)
    if args.json:
        print_json(summary)
        return 0
    table = Table(title=f"{args.config}  (input {input_shape})", title_justify="left")
    for col in ("layer", "type", "output shape", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for layer in summary["layers"]:
        frozen = " (frozen)" if layer["frozen"] else ""
        table.add_row(layer["name"] + frozen, layer["type"], str(tuple(layer["output_shape"])), f"{layer['params']:,}")
    out.print(table)
    out.print(f"Total params: {summary['total']:,}\nTrainable params: {summary['trainable']:,}\n"
              f"Non-trainable params: {summary['non_trainable']:,}")
    for line in summary["transfer"]:
        out.print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="the model's layers, output shapes and parameter counts")
    p.add_argument("config")
    add_set_option(p)
    p.add_argument("--input-shape", help="per-sample input shape, e.g. 32,32,3 (default: the dataset's)")
    add_json_option(p)
    p.set_defaults(func=run)
