"""Print the markdown rows of benchmarks/README.md from the files the runs wrote.

    python benchmarks/collect_results.py measurements/*/results.json measurements/bench-*.json

An eval results.json gives one row per selection mode; a bench JSON gives one row per run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ZeroShotDiffusionSegLib.evaluation.report import MODE_TITLES, summary_row


def eval_rows(document: dict) -> None:
    meta = document["meta"]
    stamp = " — **meaningless: random weights**" if meta.get("meaningless") else ""
    print(f"\n`{meta['command']}` ({meta['date'][:10]}; {meta['machine']}){stamp}\n")
    print("| mode | n | Dice mean ± sd | Dice median | Dice 95% CI | IoU mean ± sd | IoU median | HD95 median | HD95 undefined |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, metrics in document["summary"].items():
        print(f"| {MODE_TITLES.get(mode, mode)} | {summary_row(metrics)} |")
    failed = [c["name"] for c in document["cases"] if c["status"] != "ok"]
    if failed:
        print(f"\nfailed: {', '.join(failed)}")


def bench_row(document: dict) -> None:
    stages = document["stages_s"]
    cuda = document.get("cuda_max_allocated_mb")
    print(
        f"| {document['date'][:10]} | {document['machine']} | `{document['command']}` | {document['total_s']:.1f} | "
        f"{document['per_slice_s']:.1f} | {stages['vae']:.1f} | {stages['unet_capture']:.1f} | {document['bare_s']['unet']:.1f} | "
        f"{stages['merging']:.1f} | {stages['selection']:.2f} | {stages['consolidation']:.2f} | {stages['io']:.2f} | "
        f"{document['ratio_pipeline_to_bare']:.2f} | {document['peak_rss_mb']:.0f} | {'n/a' if cuda is None else f'{cuda:.0f}'} |"
    )


def main(paths) -> int:
    for name in paths:
        document = json.loads(Path(name).read_text())
        if "summary" in document:
            eval_rows(document)
        elif "stages_s" in document:
            bench_row(document)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
