"""Summaries of an experiment's rows: the markdown tables of docs/results.md."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

Rows = list[dict[str, Any]]


def group_mean(rows: Rows, keys: Sequence[str], field: str) -> dict[tuple, tuple[float, float]]:
    """(mean, sample standard deviation) of `field` over the rows sharing `keys` (e.g. over seeds)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r[field])
    return {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in groups.items()}


def first_reaching(curve: list[dict[str, Any]], x: str, target: float) -> float:
    """The first `x` (frames or simulated seconds) at which held-out accuracy reached `target`,
    interpolated linearly between the evaluations around the crossing (nan: never reached)."""
    previous = {x: 0.0, "valid_accuracy": -math.inf}
    for point in curve:
        accuracy = point["valid_accuracy"]
        if accuracy is not None and accuracy >= target:
            if previous["valid_accuracy"] == -math.inf:
                return point[x]
            share = (target - previous["valid_accuracy"]) / (accuracy - previous["valid_accuracy"])
            return previous[x] + share * (point[x] - previous[x])
        if accuracy is not None:
            previous = point
    return math.nan


def time_to_target(rows: Rows, fraction: float = 0.95) -> tuple[float, dict[tuple, float]]:
    """E5's target (`fraction` of the best final accuracy) and each (variant, slowdown)'s time to it."""
    target = fraction * max(r["valid_accuracy"] for r in rows)
    return target, {(r["algorithm"], r["slowdown_factor"]): first_reaching(r["curve"], "sim_seconds", target)
                    for r in rows}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in lines]
    return "\n".join(out)


def table_e1(rows: Rows) -> str:
    single = [r["valid_accuracy"] for r in rows if r["algorithm"] == "single"]
    target = 0.9 * single[0] if single else math.nan
    lines = [[r["N"], r["lr_rule"], r["period_frames"] if r["algorithm"] != "single" else "-", r["frames"],
              r["valid_objf"], r["valid_accuracy"], r["sim_wall_seconds"], r["comm_seconds"],
              r["comm_seconds"] / r["sim_wall_seconds"] if r["sim_wall_seconds"] else 0.0,
              first_reaching(r["curve"], "sim_seconds", target), r["measured_seconds"]]
             for r in rows]
    return markdown(["N", "lr", "F (frames/worker/sync)", "frames", "valid objf", "valid acc", "sim s",
                     "comm+overhead s", "overhead share", f"sim s to acc {target:.3f}", "measured s"], lines)


def table_e2(rows: Rows) -> str:
    objf = group_mean(rows, ("algorithm", "N"), "valid_objf")
    acc = group_mean(rows, ("algorithm", "N"), "valid_accuracy")
    sim = group_mean(rows, ("algorithm", "N"), "sim_wall_seconds")
    single = acc.get(("single", 1), (math.nan, 0.0))[0]
    target = 0.95 * single
    frames = defaultdict(list)
    for r in rows:
        frames[(r["algorithm"], r["N"])].append(first_reaching(r["curve"], "frames", target))
    lines = []
    for key in objf:
        reached = [f for f in frames[key] if not math.isnan(f)]
        lines.append([key[0], key[1], len(frames[key]), f"{objf[key][0]:.3f} ± {objf[key][1]:.3f}",
                      f"{acc[key][0]:.3f} ± {acc[key][1]:.4f}", acc[key][0] - single,
                      statistics.fmean(reached) if len(reached) == len(frames[key]) else "not all",
                      sim[key][0]])
    return markdown(["algorithm", "N", "seeds", "valid objf (mean ± sd)", "valid acc (mean ± sd)",
                     "acc − single", f"frames to acc {target:.3f}", "sim s"], lines)


def table_e3(rows: Rows) -> str:
    lines = [[r["algorithm"], r["batch_factor"], r["total_batch_chunks"], r["frames"], r["valid_objf"],
              r["valid_accuracy"], r["sim_wall_seconds"]] for r in rows]
    return markdown(["algorithm", "N·b / base", "N·b (chunks)", "frames", "valid objf", "valid acc", "sim s"], lines)


def table_e4(rows: Rows) -> str:
    lines = []
    for r in rows:
        calls = r["comm"]["calls"]
        lines.append([r["algorithm"], r["group_size"], r["valid_objf"], r["valid_accuracy"], r["sim_wall_seconds"],
                      calls.get("allreduce", 0), calls.get("pairwise", 0),
                      r["comm"]["bytes"].get("pairwise", 0) / 2**20])
    return markdown(["algorithm", "G", "valid objf", "valid acc", "sim s", "allreduces (intra)",
                     "pairwise exchanges (inter)", "pairwise MB"], lines)


def table_e5(rows: Rows) -> str:
    target, times = time_to_target(rows)
    lines = [[r["algorithm"], r["slowdown_factor"], r["frames"], r["valid_objf"], r["valid_accuracy"],
              times[(r["algorithm"], r["slowdown_factor"])], r["sim_wall_seconds"]] for r in rows]
    return markdown(["variant", "slow worker ×", "frames", "valid objf", "valid acc",
                     f"sim s to acc {target:.3f}", "sim s (budget)"], lines)


def table_e6(rows: Rows) -> str:
    lines = [[r["backend"], r["ranks"], r["bytes"], r.get("pingpong_s", math.nan) * 1e6,
              r.get("exchange_s", math.nan) * 1e6, r["allreduce_s"] * 1e6, r["allreduce_model_s"] * 1e6,
              r["allreduce_over_model"], r["busbw_bytes_per_s"] / 1e9, r["busbw_over_link"]] for r in rows]
    fits = {(r["backend"], r["ranks"]): (r["alpha_s"], r["beta_s_per_byte"]) for r in rows}
    text = "; ".join(f"{b} N={n}: α = {a * 1e6:.1f} µs, 1/β = {1 / beta / 1e9:.2f} GB/s"
                     for (b, n), (a, beta) in fits.items())
    return text + "\n\n" + markdown(["backend", "N", "bytes", "ping-pong µs", "exchange µs", "allreduce µs",
                                     "ring model µs", "measured/model", "busbw GB/s", "busbw·β"], lines)


TABLES = {"E1": table_e1, "E2": table_e2, "E3": table_e3, "E4": table_e4, "E5": table_e5, "E6": table_e6}
