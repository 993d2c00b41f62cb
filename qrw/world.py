"""``python -m qrw.world``: build the synthetic world and describe it.

Without ``--stats``: a few test queries next to their gold rewrites. With
``--stats``: counts, the lexical-gap table and the mined rewrite pairs with
their judge grades per kind of drift (:mod:`qrw.shop.stats`), as a
table or, with ``--json``, as deterministic JSON (byte-identical for a config).
The world itself lives in :mod:`qrw.shop.world`.
"""

from __future__ import annotations

import json
import time

from qrw.config import Parser, add_config_args, check, config_from_args, run_main
from qrw.shop.stats import format_stats, world_stats
from qrw.shop.world import World, WorldConfig


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m qrw.world", description="Build the synthetic world and describe it.")
    parser.add_argument("--stats", action="store_true",
                        help="print counts, the lexical-gap table and the mined rewrite pairs")
    parser.add_argument("--json", action="store_true", help="with --stats: deterministic JSON instead of a table")
    parser.add_argument("--samples", type=int, default=10, help="without --stats: how many test queries to show")
    add_config_args(parser, WorldConfig)
    args = parser.parse_args(argv)
    check(args.samples >= 0, "--samples must be >= 0")
    config = config_from_args(WorldConfig, args)
    start = time.perf_counter()
    world = World(config)
    build_seconds = time.perf_counter() - start
    if args.stats:
        stats, qps = world_stats(world)
        if args.json:
            print(json.dumps(stats, sort_keys=True, indent=1))
        else:
            print(format_stats(stats, qps, build_seconds))
        return 0
    for q in world.queries["test"][: args.samples]:
        print(f"[{q.segment:<5}] {q.text!r:<45} -> {q.gold!r}")
    return 0


if __name__ == "__main__":
    run_main(main)
