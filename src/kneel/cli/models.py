"""``kneel models fetch NAME`` / ``kneel models list``: the published models by name (see ``docs/models.md``)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="fetch: install a model by name; list: what is installed"
    )
    fetch = sub.add_parser(
        "fetch",
        help="download (or take --from FILE) a published release and install it as a kneel model folder",
        description="Download a published release archive (resumable), check and extract it safely, convert both "
        "stages into a kneel model folder in the cache and print where it is. Afterwards --model NAME works in "
        "kneel predict, serve and calibrate.",
        formatter_class=parser.formatter_class,
    )
    fetch.add_argument("name", metavar="NAME", help="the model's name (kneel models list), e.g. kneel-2019")
    fetch.add_argument(
        "--from", dest="archive", metavar="FILE", help="install this release archive (already downloaded) instead"
    )
    fetch.add_argument("--url", help="download from this address instead of the authors' (a mirror)")
    fetch.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache root (models go to DIR/models/NAME); default: $KNEEL_CACHE, else $XDG_CACHE_HOME/kneel, else "
        "~/.cache/kneel",
    )
    fetch.add_argument("--force", action="store_true", help="install again over an installed model")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    listing = sub.add_parser(
        "list",
        help="show the models kneel knows by name and where they are installed",
        description="Show the models kneel knows by name, whether each is installed, where, and its archive's sha256.",
        formatter_class=parser.formatter_class,
    )
    listing.add_argument("--cache-dir", metavar="DIR", help="cache root (default as for fetch)")


def run(args: argparse.Namespace) -> int:
    if args.action == "fetch":
        return _fetch(args)
    return _list(args)


def _fetch(args: argparse.Namespace) -> int:
    from kneel.hub import cache_root, fetch_model, terms_notice

    def log(line: str) -> None:
        if not args.quiet:
            print(f"kneel models: {line}", file=sys.stderr)

    result = fetch_model(
        args.name, archive=args.archive, url=args.url, cache_dir=args.cache_dir, force=args.force,
        progress=not args.quiet, log=log,
    )  # fmt: skip
    if result.already_installed:
        print(f"{result.name} is already installed in {result.folder} (sha256 {result.sha256}); --force installs it "
              f"again")  # fmt: skip
    else:
        print(f"{result.name} installed in {result.folder} (archive sha256 {result.sha256})")
        notice = terms_notice(result.folder)
        if notice:
            print(notice)
    if args.cache_dir is not None and cache_root(args.cache_dir).resolve() != cache_root().resolve():
        print(f"this is not the default cache: set KNEEL_CACHE={cache_root(args.cache_dir)} so that --model "
              f"{result.name} finds it (or give --model {result.folder})")  # fmt: skip
    print(f"use it: kneel predict FILMS --model {result.name} --out OUT")
    return 0


def _list(args: argparse.Namespace) -> int:
    from kneel.hub import MODELS, cache_root, installed, model_folder

    print(f"cache: {cache_root(args.cache_dir)}")
    for name, source in sorted(MODELS.items()):
        found = installed(name, args.cache_dir)
        if found is None:
            state = f"not installed (kneel models fetch {name})"
        else:
            sha = str(found.source.get("sha256", ""))[:16]
            state = f"installed in {found.folder} (sha256 {sha}..., {found.source.get('fetched', '?')})"
        print(f"{name}  {state}\n    {source.description}")
        if found is None and model_folder(name, args.cache_dir).exists():
            print(f"    {model_folder(name, args.cache_dir)} exists but is incomplete: fetch it again with --force")
    return 0
