"""Figures of an experiment, drawn on `matplotlib.figure.Figure` objects.

No `pyplot` here: the figures need no GUI backend, so they work headless (the CLI
saves them as PNG) and display inline in a notebook. Each function returns its
`matplotlib.figure.Figure`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _figure(**kwargs):
    from matplotlib.figure import Figure  # imported on first use: `import metapinn` stays light

    return Figure(layout="constrained", **kwargs)


def _band(ax, x, values, label, log=True):
    """Mean over axis 0 as a line, min..max as a band; NaN entries (e.g. a diverged
    run) are left out."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    if not count.any():
        return
    total = np.where(finite, values, 0.0).sum(axis=0)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    (line,) = ax.plot(x, mean, label=label, marker="o" if len(x) < 30 else None, ms=3)
    if values.shape[0] > 1:
        low, high = np.fmin.reduce(values, axis=0), np.fmax.reduce(values, axis=0)
        ax.fill_between(x, low, high, alpha=0.2, lw=0, color=line.get_color())
    if log:
        ax.set_yscale("log")


def plot_meta_training(curves: Mapping[str, np.ndarray], labels: Mapping[str, str] | None = None):
    """Meta-training curves: the mean query loss at the adapted parameters, per outer
    step (for multi-task, the loss at the initialisation itself).

    **Arguments:**

    - `curves`: `curves[method]` of shape `(seeds, steps)`; NaN entries are left out
      of the mean and band, and a method with no steps is skipped.
    - `labels`: `labels[method]`, the display label (default: the method's key).

    **Returns:** a `matplotlib.figure.Figure` (one axes; y on a log scale).
    """
    fig = _figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for method, values in curves.items():
        values = np.asarray(values)
        if values.shape[-1] == 0:
            continue
        _band(ax, np.arange(values.shape[-1]), values, (labels or {}).get(method, method))
    ax.set_xlabel("meta-step")
    ax.set_ylabel("query loss after the inner loop")
    ax.set_title("Meta-training (mean over seeds, band: min–max)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return fig


def plot_few_shot(steps: Sequence[int], per_run: Mapping[str, np.ndarray], labels: Sequence[str]):
    """Few-shot curves: relative L2 error and PINN loss against adaptation steps.

    **Arguments:**

    - `steps`: the recorded step counts `k`.
    - `per_run`: `per_run[name]` of shape `(init, seed, task, k)` for `name` in
      `"rel_l2"` and `"loss"` (averaged over tasks; mean and min–max over seeds).
    - `labels`: one label per init.

    **Returns:** a `matplotlib.figure.Figure` (two axes: the error, then the loss).

    **Raises:** `KeyError` if `per_run` lacks `"rel_l2"` or `"loss"`.
    """
    fig = _figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    x = np.asarray(steps, dtype=np.float64)
    for ax, name, title in ((axes[0], "rel_l2", "rel-L2 vs reference"),
                            (axes[1], "loss", "PINN loss")):  # fmt: skip
        values = np.asarray(per_run[name]).mean(axis=2)  # (init, seed, k)
        for i, label in enumerate(labels):
            _band(ax, x, values[i], label)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("Adam steps k on the held-out task")
        ax.set_title(f"{title} (mean over tasks and seeds)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    return fig


def plot_per_task(
    tasks: Sequence[str],
    rel_l2: np.ndarray,
    labels: Sequence[str],
    steps: Sequence[int],
    budget: int,
):
    """Relative L2 error per held-out task at `budget` steps (bars: mean over seeds,
    whiskers: min–max), with random init at the longest adaptation beside.

    **Arguments:**

    - `tasks`: one label per held-out task (`"nu=0.0091"`).
    - `rel_l2`: shape `(init, seed, task, k)`, init 0 being random; a seed with a
      non-finite entry is left out of that series.
    - `labels`: one label per init.
    - `steps`: the recorded step counts `k` (the last axis of `rel_l2`).
    - `budget`: the step count to show; one of `steps`.

    **Returns:** a `matplotlib.figure.Figure`.

    **Raises:** `ValueError` if `budget` is not in `steps`.
    """
    rel_l2 = np.asarray(rel_l2, dtype=np.float64)
    kb = list(steps).index(budget)
    series = [(f"{lab} + {budget}", rel_l2[i, :, :, kb]) for i, lab in enumerate(labels)]
    if steps[-1] != budget:
        series.append((f"{labels[0]} + {steps[-1]}", rel_l2[0, :, :, -1]))
    fig = _figure(figsize=(9, 4))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    centres = np.arange(len(tasks))
    for j, (label, values) in enumerate(series):
        values = values[np.isfinite(values).all(axis=1)]  # drop diverged seeds
        if values.shape[0] == 0:
            continue
        mean = values.mean(axis=0)
        err = np.stack([mean - values.min(axis=0), values.max(axis=0) - mean])
        ax.bar(centres + (j - (len(series) - 1) / 2) * width, mean, width, yerr=err,
               label=label, capsize=2)  # fmt: skip
    ax.set_xticks(centres, list(tasks))
    ax.set_xlabel("held-out task")
    ax.set_ylabel("rel-L2 vs reference")
    ax.set_title("Error per held-out task")
    ax.legend(fontsize="small")
    return fig


def plot_fields(
    x: np.ndarray,
    t: np.ndarray,
    u_ref: np.ndarray,
    fields: Mapping[str, np.ndarray],
    task: str,
    seed: int | None = None,
):
    """For one task: the reference field and each PINN field (top row, one
    colour scale), and each PINN's error (bottom row, one colour scale).

    **Arguments:**

    - `x`, `t`: the grid, shapes `(nx,)` and `(nt,)`.
    - `u_ref`: the reference, shape `(nt, nx)`.
    - `fields`: `fields[label]`, a PINN's field of shape `(nt, nx)`.
    - `task`: the task's label (`"nu=0.0091"`), for the title.
    - `seed`: the seed, for the title (default `None`: not shown).

    **Returns:** a `matplotlib.figure.Figure` (two rows of `len(fields) + 1` axes).
    """
    cols = len(fields) + 1
    fig = _figure(figsize=(2.6 * cols + 1.2, 5.4))
    axes = fig.subplots(2, cols, sharex=True, sharey=True, squeeze=False)
    extent = (float(x[0]), float(x[-1]), float(t[0]), float(t[-1]))
    vmax = float(np.max(np.abs(u_ref)))
    diffs = {label: np.asarray(u) - u_ref for label, u in fields.items()}
    dmax = max((float(np.max(np.abs(d))) for d in diffs.values()), default=1.0)
    kw = {"origin": "lower", "aspect": "auto", "extent": extent, "cmap": "RdBu_r"}
    top = axes[0, 0].imshow(u_ref, vmin=-vmax, vmax=vmax, **kw)
    axes[0, 0].set_title("reference", fontsize="small")
    axes[1, 0].axis("off")
    bottom = None
    for c, (label, u) in enumerate(fields.items(), start=1):
        axes[0, c].imshow(u, vmin=-vmax, vmax=vmax, **kw)
        axes[0, c].set_title(label, fontsize="small")
        bottom = axes[1, c].imshow(diffs[label], vmin=-dmax, vmax=dmax, **kw)
        axes[1, c].set_title("PINN − reference", fontsize="small")
    fig.colorbar(top, ax=axes[0, :], label="u", shrink=0.9)
    if bottom is not None:
        fig.colorbar(bottom, ax=axes[1, :], label="error", shrink=0.9)
    for ax in axes[1, 1:]:
        ax.set_xlabel("x")
    axes[0, 0].set_ylabel("t")
    axes[0, 0].set_xlabel("x")
    axes[0, 0].tick_params(labelbottom=True)
    axes[1, 1].set_ylabel("t")
    axes[1, 1].tick_params(labelleft=True)
    suffix = "" if seed is None else f" (seed {seed})"
    fig.suptitle(f"Fields at {task}{suffix}")
    return fig


def plot_ablation(
    series: Mapping[str, Mapping[str, np.ndarray]],
    x_label: str,
    budget: int,
    random: float | None = None,
):
    """An ablation grid against one numeric setting (e.g. the inner length K): the
    rel-L2 error at the few-shot budget (± its std over seeds), the meta-step time and
    XLA's temporary memory of the meta-step, one line per combination of the other
    settings.

    **Arguments:**

    - `series`: `series[label]`, a mapping with NumPy arrays `"x"`, `"rel_l2"`,
      `"rel_l2_std"`, `"seconds"` and `"temp_mib"`, all of one length.
    - `x_label`: the x-axis label.
    - `budget`: the few-shot budget, for the first title.
    - `random`: random init's error at the budget, drawn as a dashed line if given
      and finite (default `None`).

    **Returns:** a `matplotlib.figure.Figure` (three axes, log scales; x on a log scale
    when every `x` is positive).

    **Raises:** `KeyError` if a series lacks one of the five arrays.
    """
    fig = _figure(figsize=(13, 4))
    axes = fig.subplots(1, 3)
    for label, s in series.items():
        order = np.argsort(s["x"])
        x = s["x"][order]
        (line,) = axes[0].plot(x, s["rel_l2"][order], marker="o", ms=4, label=label)
        low = s["rel_l2"][order] - s["rel_l2_std"][order]
        high = s["rel_l2"][order] + s["rel_l2_std"][order]
        axes[0].fill_between(x, np.maximum(low, 1e-12), high, alpha=0.2, lw=0,
                             color=line.get_color())  # fmt: skip
        axes[1].plot(x, s["seconds"][order], marker="o", ms=4, label=label)
        axes[2].plot(x, s["temp_mib"][order], marker="o", ms=4, label=label)
    if random is not None and np.isfinite(random):
        axes[0].axhline(random, color="k", ls="--", lw=1, label="random init")
    titles = (
        f"rel-L2 after {budget} adaptation steps",
        "meta-step time (s, median)",
        "XLA temporary memory of a meta-step (MiB)",
    )
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    positive = all(np.all(s["x"] > 0) for s in series.values())
    ticks = sorted({float(v) for s in series.values() for v in s["x"]})
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(x_label)
        ax.set_yscale("log")
        if positive:
            ax.set_xscale("log")
        ax.set_xticks(ticks)  # the grid's own values, as plain numbers
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].legend(fontsize=8)
    return fig


def plot_solve(x: np.ndarray, t: np.ndarray, u_ref: np.ndarray, u: np.ndarray, trace, title: str):
    """One solved task (`metapinn solve`): the reference, the PINN's field and its
    error on the grid, and the error against wall-clock.

    **Arguments:** the grid `x` `(nx,)`, `t` `(nt,)`; `u_ref` and `u`, `(nt, nx)`;
    `trace`, a [`metapinn.training.TimedTrace`][]; `title`.

    **Returns:** a `matplotlib.figure.Figure` of four axes.
    """
    fig = _figure(figsize=(13, 3.4))
    axes = fig.subplots(1, 4)
    extent = (float(x[0]), float(x[-1]), float(t[0]), float(t[-1]))
    kw = {"origin": "lower", "aspect": "auto", "extent": extent, "cmap": "RdBu_r"}
    vmax = float(np.max(np.abs(u_ref)))
    for ax, field, name in ((axes[0], u_ref, "reference"), (axes[1], u, "PINN")):
        image = ax.imshow(field, vmin=-vmax, vmax=vmax, **kw)
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("x")
    axes[0].set_ylabel("t")
    fig.colorbar(image, ax=axes[1], label="u")
    diff = np.asarray(u) - u_ref
    dmax = float(np.max(np.abs(diff))) or 1.0
    image = axes[2].imshow(diff, vmin=-dmax, vmax=dmax, **kw)
    axes[2].set_title("PINN − reference", fontsize="small")
    axes[2].set_xlabel("x")
    fig.colorbar(image, ax=axes[2], label="error")
    seconds = np.asarray(trace.seconds)
    axes[3].plot(seconds, trace.rel_l2, marker="o" if len(seconds) < 40 else None, ms=3)
    axes[3].set_yscale("log")
    axes[3].set_xlabel("seconds (compile excluded)")
    axes[3].set_ylabel("relative L2 error")
    axes[3].grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    return fig


ADAPTER_STYLES = {"adam": "-", "gauss-newton": "--", "lbfgs": ":"}
"""The line style of each adapter in `plot_error_vs_seconds` (another, e.g. a
Gauss–Newton variant with fewer CG iterations: dash-dot, square markers)."""


def plot_error_vs_seconds(
    curves: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    labels: Mapping[str, str] | None = None,
    title: str = "",
):
    """Error against wall-clock for each (initialisation, adapter): the relative L2
    error after each recorded step count against the seconds it took.

    **Arguments:**

    - `curves`: `curves[init, adapter] = (seconds, rel_l2)`, each of shape
      `(seed, task, k)`; both are averaged over the tasks, then the line is the mean
      over seeds (at the seeds' mean seconds) and the band their min–max. A seed
      with a NaN entry (diverged) is left out. One colour per initialisation, one line style
      per adapter (`ADAPTER_STYLES`).
    - `labels`: display labels of the initialisations and adapters (default: the keys).
    - `title`: the figure's title.

    **Returns:** a `matplotlib.figure.Figure` (one axes; y logarithmic, x linear up
    to 0.1 s and logarithmic beyond, so that k = 0, at 0 s, is drawn).
    """
    labels = labels or {}
    fig = _figure(figsize=(10.5, 4.8))
    ax = fig.add_subplot()
    colours: dict[str, Any] = {}
    for (init, adapter), (seconds, rel) in curves.items():
        seconds = np.asarray(seconds, dtype=np.float64).mean(axis=1)  # (seed, k)
        rel = np.asarray(rel, dtype=np.float64).mean(axis=1)
        keep = np.isfinite(rel).all(axis=1) & np.isfinite(seconds).all(axis=1)
        if not keep.any():
            continue
        seconds, rel = seconds[keep], rel[keep]
        x = seconds.mean(axis=0)
        (line,) = ax.plot(
            x, rel.mean(axis=0), ls=ADAPTER_STYLES.get(adapter, "-."), ms=3,
            marker="o" if adapter in ADAPTER_STYLES else "s",
            color=colours.get(init),
            label=f"{labels.get(init, init)} · {labels.get(adapter, adapter)}",
        )  # fmt: skip
        colours[init] = line.get_color()
        if rel.shape[0] > 1:
            ax.fill_between(x, rel.min(axis=0), rel.max(axis=0), alpha=0.15, lw=0,
                            color=line.get_color())  # fmt: skip
    ax.set_yscale("log")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("seconds of adaptation per task (compilation excluded)")
    ax.set_ylabel("rel-L2 vs reference (mean over tasks)")
    ax.set_title(title or "Error against wall-clock (line: mean over seeds; band: min–max)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside right upper", fontsize=8)
    return fig
