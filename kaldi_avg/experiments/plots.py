"""One PNG per experiment (matplotlib, Agg backend): the shapes docs/algorithms.md §3.3 asks for."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .tables import group_mean, time_to_target

Rows = list[dict[str, Any]]


def _curve(ax, row: dict[str, Any], x: str, y: str, **style) -> None:
    ax.plot([p[x] for p in row["curve"]], [p[y] for p in row["curve"]], marker=".", **style)


def plot_e1(rows: Rows, fig) -> None:
    ax1, ax2, ax3 = fig.subplots(1, 3)
    runs = [r for r in rows if r["algorithm"] != "single"]
    biggest = max(r["N"] for r in runs)
    for r in runs:
        if r["N"] == biggest and r["lr_rule"] == "N*lr":
            _curve(ax1, r, "frames", "valid_objf", label=f"F={r['period_frames']}")
    for r in rows:
        if r["algorithm"] == "single":
            _curve(ax1, r, "frames", "valid_objf", label="1 worker", color="k", linestyle="--")
            ax2.axhline(r["valid_accuracy"], color="k", linestyle="--", label="1 worker")
    ax1.set(title=f"MA, N={biggest}, lr=N·η: held-out objective", xlabel="frames processed", ylabel="log-lik/frame")
    ax1.legend(fontsize=7)
    lines = defaultdict(list)
    for r in runs:
        lines[(r["N"], r["lr_rule"])].append((r["period_frames"], r["valid_accuracy"], r))
    for (n, rule), points in sorted(lines.items()):
        points.sort(key=lambda p: p[0])
        ax2.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"N={n}, {rule}")
        epochs = [p[2]["frames"] / p[2]["epoch_frames"] for p in points]
        if rule == "N*lr":
            ax3.plot([p[0] for p in points], [p[2]["sim_wall_seconds"] / e for p, e in zip(points, epochs)],
                     marker="o", label=f"modelled, N={n}")
            ax3.plot([p[0] for p in points], [p[2]["measured_seconds"] / e for p, e in zip(points, epochs)],
                     marker="x", linestyle=":", label=f"measured (2 CPUs), N={n}")
    ax2.set(xscale="log", title="final held-out frame accuracy", xlabel="frames per worker between syncs (F)")
    ax2.legend(fontsize=7)
    ax3.set(xscale="log", yscale="log", title="seconds per epoch", xlabel="F")
    ax3.legend(fontsize=7)


def plot_e2(rows: Rows, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    means = group_mean(rows, ("algorithm", "N"), "valid_accuracy")
    labels = list(dict.fromkeys(r["algorithm"] for r in rows if r["algorithm"] != "single"))
    workers = sorted({r["N"] for r in rows if r["algorithm"] != "single"})
    width = 0.8 / len(workers)
    for i, n in enumerate(workers):
        values = [means.get((label, n), (float("nan"), 0.0)) for label in labels]
        ax1.bar([j + i * width for j in range(len(labels))], [v[0] for v in values], width,
                yerr=[v[1] for v in values], label=f"N={n}", capsize=2)
    single = means.get(("single", 1))
    if single:
        ax1.axhline(single[0], color="k", linestyle="--", label="1 worker")
    ax1.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=30, fontsize=8)
    ax1.set(title="final held-out accuracy (mean ± sd over seeds)", ylim=(0, None))
    ax1.legend(fontsize=7)
    for r in rows:
        if r["seed"] == 0 and r["N"] in (1, workers[-1]):
            _curve(ax2, r, "frames", "valid_objf", label=f"{r['algorithm']} N={r['N']}")
    ax2.set(title=f"held-out objective, N={workers[-1]}, seed 0", xlabel="frames processed", ylabel="log-lik/frame")
    ax2.legend(fontsize=7)


def plot_e3(rows: Rows, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for label in dict.fromkeys(r["algorithm"] for r in rows):
        mine = sorted((r for r in rows if r["algorithm"] == label), key=lambda r: r["batch_factor"])
        ax1.plot([r["batch_factor"] for r in mine], [r["valid_objf"] for r in mine], marker="o", label=label)
        for r in mine:
            _curve(ax2, r, "frames", "valid_objf", label=f"{label} {r['batch_factor']}x")
    ax1.set(title="final held-out objective vs total batch", xlabel="N·b / base batch", ylabel="log-lik/frame")
    ax1.legend()
    ax2.set(title="held-out objective", xlabel="frames processed")
    ax2.legend(fontsize=7)


def plot_e4(rows: Rows, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for r in rows:
        _curve(ax1, r, "frames", "valid_objf", label=r["algorithm"])
    ax1.set(title="held-out objective (N=8)", xlabel="frames processed", ylabel="log-lik/frame")
    ax1.legend()
    labels = [r["algorithm"] for r in rows]
    ax2.bar(labels, [r["sim_wall_seconds"] for r in rows])
    ax2.set(title="modelled wall time", ylabel="simulated seconds")
    ax2.tick_params(axis="x", labelrotation=20)


def plot_e5(rows: Rows, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    target, times = time_to_target(rows)
    for r in rows:
        _curve(ax1, r, "sim_seconds", "valid_accuracy", label=f"{r['algorithm']} slow×{r['slowdown_factor']:g}",
               linestyle={1.0: "-", 2.0: "--", 4.0: ":"}[r["slowdown_factor"]])
    ax1.axhline(target, color="k", linewidth=0.5)
    ax1.set(title="held-out accuracy (N=8, worker 0 slowed)", xlabel="simulated seconds")
    ax1.legend(fontsize=6)
    labels = list(dict.fromkeys(r["algorithm"] for r in rows))
    slows = sorted({r["slowdown_factor"] for r in rows})
    width = 0.8 / len(slows)
    for i, slow in enumerate(slows):
        heights = [times.get((label, slow), float("nan")) for label in labels]
        ax2.bar([j + i * width for j in range(len(labels))], heights, width, label=f"slow×{slow:g}")
    ax2.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels)
    ax2.set(title=f"simulated time to {target:.3f} accuracy", ylabel="seconds")
    ax2.legend(fontsize=7)


def plot_e6(rows: Rows, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for (backend, n) in dict.fromkeys((r["backend"], r["ranks"]) for r in rows):
        mine = [r for r in rows if r["backend"] == backend and r["ranks"] == n]
        sizes = [r["bytes"] for r in mine]
        ax1.plot(sizes, [r["allreduce_s"] for r in mine], marker="o", label=f"allreduce {backend} N={n}")
        ax1.plot(sizes, [r["allreduce_model_s"] for r in mine], linestyle=":", label=f"ring model {backend} N={n}")
        if n == 2:
            ax1.plot(sizes, [r["pingpong_s"] for r in mine], marker="x", label=f"ping-pong {backend}")
        ax2.plot(sizes, [r["busbw_bytes_per_s"] / 1e9 for r in mine], marker="o", label=f"busbw {backend} N={n}")
        ax2.axhline(1 / mine[0]["beta_s_per_byte"] / 1e9, linestyle=":", linewidth=0.7)
    ax1.set(xscale="log", yscale="log", title="time vs message size", xlabel="bytes", ylabel="seconds")
    ax1.legend(fontsize=6)
    ax2.set(xscale="log", title="allreduce bus bandwidth (dotted: 1/β)", xlabel="bytes", ylabel="GB/s")
    ax2.legend(fontsize=6)


PLOTS: dict[str, Callable[[Rows, Any], None]] = {
    "E1": plot_e1, "E2": plot_e2, "E3": plot_e3, "E4": plot_e4, "E5": plot_e5, "E6": plot_e6}


def save(experiment: str, rows: Rows, path: str, title: str) -> None:
    fig = plt.figure(figsize=(15 if experiment == "E1" else 11, 4.2), dpi=80)
    PLOTS[experiment](rows, fig)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
