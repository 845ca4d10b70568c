"""Terminal views of result bundles (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from evaluation.bundle import ResultBundle


def print_bundle_summary(bundle: ResultBundle, console: Console | None = None, *, ceiling: ResultBundle | None = None) -> None:
    """Per-task macro-F1, the primary metric with its CI, camera L1, PSNR/SSIM and throughput of a bundle; with
    ``ceiling`` (the IDM on ground-truth video), a second row per task shows the ceiling."""
    console = console or Console()
    m = bundle.metrics
    table = Table(title=f"{bundle.model.name} on {bundle.suite.name} (IDM {bundle.idm.name})")
    table.add_column("task")
    table.add_column("F1 macro", justify="right")
    table.add_column("F1 micro", justify="right")
    if ceiling is not None:
        table.add_column("ceiling F1 macro", justify="right")
    for task, scores in m.tasks.items():
        row = [task, f"{scores['f1_macro']:.3f}", f"{scores['f1_micro']:.3f}"]
        if ceiling is not None:
            row.append(f"{ceiling.metrics.tasks[task]['f1_macro']:.3f}")
        table.add_row(*row)
    primary = m.primary
    row = ["mean (primary)", f"{primary.value:.3f} [{primary.ci95[0]:.3f}, {primary.ci95[1]:.3f}]", f"{m.mean_on_task['f1_micro']:.3f}"]
    if ceiling is not None:
        row.append(f"{ceiling.metrics.primary.value:.3f}")
    table.add_row(*row, style="bold")
    console.print(table)
    extras = [f"items {primary.n_items}", f"RLIR reward {m.reward_mean:.3f}"]
    if m.camera_l1 is not None:
        extras.append(f"camera L1 {m.camera_l1:.3f} bins")
    if m.psnr is not None:
        extras.append(f"PSNR {m.psnr['mean']:.2f} dB")
    if m.ssim is not None:
        extras.append(f"SSIM {m.ssim['mean']:.3f}")
    if m.lpips is not None:
        extras.append(f"LPIPS {m.lpips['mean']:.3f}")
    if m.fvd is not None:
        extras.append(f"FVD {m.fvd['mean']:.1f}")
    if m.throughput is not None:
        extras.append(f"{m.throughput.frames_per_second:.1f} frames/s ({m.throughput.device}, {m.throughput.num_envs} envs)")
    console.print(" | ".join(extras))


def print_comparison(rows: list, names: tuple[str, str], console: Console | None = None) -> None:
    """A table of :func:`evaluation.compare.compare_bundles` rows: A, B, ``B - A`` and its paired 95% interval."""
    console = console or Console()
    table = Table(title="B - A, paired bootstrap over the same items",
                  caption=f"A = {names[0]}, B = {names[1]}; * the interval excludes 0")
    for header in ("metric", "A", "B", "B - A", "95% CI", ""):
        table.add_column(header, justify="left" if header == "metric" else "right")
    for row in rows:
        digits = 2 if row.metric == "psnr" else 4
        table.add_row(row.metric, f"{row.a:.{digits}f}", f"{row.b:.{digits}f}", f"{row.difference:+.{digits}f}",
                      f"[{row.ci95[0]:+.{digits}f}, {row.ci95[1]:+.{digits}f}]", "*" if row.significant else "")  # fmt: skip
    console.print(table)
