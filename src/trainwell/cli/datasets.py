"""``trainwell datasets info NAME``: where a dataset comes from, its classes, shapes and checksum."""

from __future__ import annotations

import argparse

from trainwell.cli.common import add_json_option, key_value_table, out, print_json


def run_info(args: argparse.Namespace) -> int:
    from trainwell.data import dataset_info

    info = dataset_info(args.name, path=args.path, verify=not args.no_verify)
    if args.json:
        print_json(info)
    else:
        out.print(key_value_table(f"dataset {args.name}", info))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="dataset information")
    dsub = p.add_subparsers(dest="datasets_command", required=True, metavar="SUBCOMMAND")
    q = dsub.add_parser("info", help="where a dataset comes from, its classes, shapes and checksum")
    q.add_argument("name", help="cifar10, fashion_mnist, imagefolder or npz")
    q.add_argument("--path", help="an explicit file or folder")
    q.add_argument("--no-verify", action="store_true", help="skip the checksum (for hand-made archives)")
    add_json_option(q)
    q.set_defaults(func=run_info)
