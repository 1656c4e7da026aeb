"""python -m bench [--size tiny|quick|default] SCENARIO ...: run scenarios, write the report."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import compare, feed_modes, images, overload, report, scenarios, stack
from bench.data import SIZES, load
from bench.photos import phone_jpegs

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "thumbnail",
    "feed-vs-follows",
    "costs",
    "mix",
    "upload-storm",
    "v1-uploads",
    "images",
    "feed-modes",
    "overload",
    "celebrity",
    "compare",  # last: it takes the far user's image latency from images, when that ran
)


@dataclass(frozen=True)
class Budget:
    """How long each scenario runs at a size."""

    step_seconds: float
    thumbnail_runs: int
    feed_runs: int
    feed_point_seconds: float
    mix_start_rate: float
    mix_steps: int
    storm_feed_rate: float
    storm_upload_rates: tuple[float, ...]
    v1_upload_rates: tuple[float, ...]
    image_pages: int  # feed pages of 5 images per browser in the images scenario
    image_rounds: int  # browsers per way
    mode_rates: tuple[float, ...]  # feed-modes: offered reads/s, until p99 passes 50 ms
    # overload: feed reads/s and uploads/s ramped to find capacity, before 1.5x/3x and 2x/3x
    overload_feed_rates: tuple[float, ...]
    overload_upload_rates: tuple[float, ...]
    compare_upload_rates: tuple[float, ...]  # uploads/s under 100 feed reads/s, per architecture
    feed_rates: tuple[float, ...] = (250, 500, 750, 1000, 1250)


BUDGETS = {
    "tiny": Budget(
        1.0,
        2,
        20,
        1.0,
        10,
        2,
        10,
        (2, 4),
        (2, 4),
        2,
        1,
        (200,),
        (50, 100),
        (2,),
        (2,),
        feed_rates=(250,),
    ),
    "quick": Budget(
        4.0,
        5,
        100,
        4.0,
        40,
        5,
        100,
        (5, 10, 20, 40),
        (5, 10, 20),
        4,
        3,
        (200, 400, 800),
        (250, 500, 750, 1000),
        (5, 10, 20),
        (5, 10, 20, 30),
    ),
    "default": Budget(
        8.0,
        15,
        300,
        8.0,
        40,
        7,
        100,
        (5, 10, 20, 30, 40, 60),
        (5, 10, 20),
        6,
        5,
        (200, 400, 800, 1200),
        (250, 500, 750, 1000, 1250, 1500),
        (5, 10, 15, 20, 25),
        (5, 10, 20, 30, 40),
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, "all"], default=["all"])
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--processes", type=int, default=2, help="service processes (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    chosen = list(SCENARIOS) if "all" in args.scenarios else args.scenarios
    path = asyncio.run(run(chosen, args.size, args.processes, args.out))
    print(f"bench report: {path}")
    return 0


async def run(chosen: list[str], size_name: str, processes: int, out: Path) -> Path:
    size, budget = SIZES[size_name], BUDGETS[size_name]
    stamp = report.stamp_now()
    workdir = ROOT / ".local" / "bench"
    facts: dict[str, Any] = {
        "size": size_name,
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}",
    }
    results: dict[str, Any] = {}
    photos = phone_jpegs(workdir / "photos")
    with stack.backends(workdir / size_name, os.environ) as backends:
        settings = backends.settings
        from app.migrations import migrate
        from app.storage import ensure_bucket

        assert settings.database_url
        if "postgresql" in backends.pids:  # started here, not given by DATABASE_URL
            await stack.empty_schema(settings.database_url)
        await migrate(settings.database_url)
        await ensure_bucket(settings)
        graph, facts["data"] = await load(settings.database_url, size)
        ctx = scenarios.Context(
            settings,
            graph,
            size,
            photos,
            budget.step_seconds,
            processes,
            workdir,
            budget.feed_rates,
            backends.pids,
        )
        for name in chosen:
            started = time.perf_counter()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            result = await _scenario(name, ctx, budget, results)
            result["seconds"] = round(time.perf_counter() - started, 1)
            results[name] = result
            report.write_json(out, name, stamp, {"facts": facts, "result": result})
    return report.write_markdown(out, stamp, results, facts)


async def _scenario(
    name: str, ctx: scenarios.Context, budget: Budget, earlier: dict[str, Any]
) -> dict[str, Any]:
    if name == "thumbnail":
        return await asyncio.to_thread(scenarios.thumbnail, ctx, budget.thumbnail_runs)
    if name == "feed-vs-follows":
        return await scenarios.feed_vs_follows(ctx, budget.feed_runs, budget.feed_point_seconds)
    if name == "costs":
        return await scenarios.costs(ctx, budget.step_seconds)
    if name == "mix":
        return await scenarios.mix(ctx, budget.mix_start_rate, budget.mix_steps)
    if name == "v1-uploads":
        return await scenarios.v1_uploads(ctx, list(budget.v1_upload_rates), budget.storm_feed_rate)
    if name == "feed-modes":
        return await feed_modes.feed_modes(ctx, budget.mode_rates)
    if name == "overload":
        return await overload.overload(
            ctx, budget.overload_feed_rates, budget.overload_upload_rates
        )
    if name == "compare":
        return await compare.compare(
            ctx,
            budget.compare_upload_rates,
            budget.image_pages,
            budget.image_rounds,
            earlier.get("images"),
        )
    if name == "images":
        return await images.images(ctx, budget.image_pages, budget.image_rounds)
    if name == "upload-storm":
        return await scenarios.upload_storm(
            ctx, budget.storm_feed_rate, list(budget.storm_upload_rates)
        )
    return await scenarios.celebrity(ctx)


if __name__ == "__main__":
    sys.exit(main())
