"""Print the compact flow-matching-versus-distillation table from an eval run.

    PYTHONPATH=. python docs/scripts/distillation_table.py results/distillation/summary.json

Rows as in ``configs/eval/distillation.yaml``; columns PSNR-Y, SSIM-Y, FID, patch-FID, NFE, s/MP and
training cost (hours and hardware, from each model's ``training.json``), then each method's
patch-FID and time against the teacher at 1 Euler step (the shipped default).
"""

from __future__ import annotations

import json
import sys

from eval.report import format_training_cost


def main(path: str) -> None:
    summary = json.load(open(path))
    rows = {r["method"]: r for r in summary["methods"]}
    print("| method | PSNR-Y (dB) | SSIM-Y | FID | patch-FID | NFE | s/MP (CPU) | training |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        training = format_training_cost(r.get("training_cost")) if r.get("training_cost") else "none"
        print(f"| {name} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {r['fid']:.2f} | {r['patch_fid']:.2f} "
              f"| {int(r['nfe'])} | {r['time_per_mp_s']:.3g} | {training} |")
    teacher = rows.get("teacher-euler-1")
    if teacher is None:
        return
    print()
    for name, r in rows.items():
        if name != "teacher-euler-1" and r["patch_fid"] is not None:
            print(f"- {name}: patch-FID {r['patch_fid'] / teacher['patch_fid']:.2f}x the teacher's at 1 step, "
                  f"time {r['time_per_mp_s'] / teacher['time_per_mp_s']:.2f}x")
    print(f"\n{teacher['patches']} patches.")


if __name__ == "__main__":
    main(sys.argv[1])
