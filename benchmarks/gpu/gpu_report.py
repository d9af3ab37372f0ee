"""bench_gpu's results as the markdown tables BENCHMARKS.md pastes."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, spec: str = ".4g") -> str:
    return "—" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def tables(results: dict) -> str:
    """Every figure as markdown tables (what BENCHMARKS.md pastes)."""
    cols = "stage | ckpt | batch (cap, stop) | step s (median) | samples/s | TFLOP/step | TFLOP/s | MFU | GiB"
    lines = [f"| {cols} |", "|---" * 9 + "|"]
    for stage, parts in results.get("train", {}).items():
        if not stage.startswith("stage"):
            continue
        for ck in ("ckpt_on", "ckpt_off"):
            r = parts.get(ck, {})
            why = r.get("error") or r.get("skipped")
            if why:
                lines.append(f"| {stage[5:]} | {ck[5:]} | {why} | | | | | | |")
                continue
            lines.append(
                f"| {stage[5:]} | {ck[5:]} | {r['batch']} ({r['batch_cap']}, {r['search_stopped_by']}) | "
                f"{fmt(r['step_s_median'])} | "
                f"{fmt(r['samples_per_s'])} | {fmt(r['flops_per_step'] / 1e12)} | "
                f"{fmt(r['achieved_tflops'])} | "
                f"{100 * r['mfu']:.2f} % | {fmt(r['peak_memory_gb'])} |"
            )
    cached = results.get("train", {}).get("stage2", {}).get("cached_latents", {})
    if "speedup_vs_pixels" in cached:
        lines.append(
            f"| 2, cached latents | on | {cached['batch']} | {fmt(cached['step_s_median'])} | "
            f"{fmt(cached['samples_per_s'])} | ×{cached['speedup_vs_pixels']} vs pixels | | | "
            f"{fmt(cached['peak_memory_gb'])} |"
        )
    lines += [
        "",
        "| generation | steps | CFG | frames | s/frame | peak GiB | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for part in ("generate", "flat_memory"):
        for name, r in results.get(part, {}).items():
            if not isinstance(r, dict) or name == "setup":
                continue
            if "s_per_frame" not in r:
                lines.append(f"| {part}/{name} | {r.get('error') or r.get('skipped')} | | | | | |")
                continue
            mfu = f"{100 * r['mfu']:.2f} %" if "mfu" in r else "—"
            lines.append(
                f"| {part}/{name} ({r['audio_s']} s audio) | {r['steps']} | {r['cfg']} | {r['frames']} | "
                f"{fmt(r['s_per_frame'])} | {fmt(r['peak_memory_gb'])} | {mfu} |"
            )
    flat = results.get("flat_memory", {})
    if "long_over_short" in flat:
        lines.append(f"\nflat memory: long / short peak = {flat['long_over_short']}")
    rd = results.get("reader", {})
    lines += ["", "| reader workers | stage-2 samples/s |", "|---|---|"]
    for w, rate in rd.get("samples_per_s_by_workers", {}).items():
        lines.append(f"| {w} | {fmt(rate)} |")
    if "needed_samples_per_s" in rd:
        lines.append(f"| needed by the stage-2 step | {fmt(rd['needed_samples_per_s'])} |")
    elif "samples_per_s_by_workers" not in rd:
        lines.append(f"| — | {rd.get('skipped') or rd.get('error')} |")
    return "\n".join(lines)
