"""Print the compact model-card table from an eval run.

    python docs/scripts/model_card_table.py results/model_card_set14/summary.json
    python docs/scripts/model_card_table.py results/x4_set14/summary.json      # x4: default row "flowup"

Rows in the run's order; the last line checks the issue's quality bar for the default
(``flowup:euler:1`` at x2: 1 Euler step and the model's back-projection steps; ``flowup`` at x4:
every model default) against bicubic and PSU,
and compares it with the back-projected baselines where the run has them.
"""

import json
import sys

LABELS = {
    "bicubic": "bicubic",
    "bicubic:bp5": "bicubic + 5 back-projection steps",
    "psu": "PSU (codec round trip of bicubic, no flow)",
    "psu:bp5": "PSU + 5 back-projection steps (no flow)",
    "flowup:euler:1:bp0": "flowup, Euler 1 step, no back-projection",
    "flowup:euler:1": "**flowup, Euler 1 step (default, 5 back-projection steps)**",
    "realesrgan-compact-x2": "Real-ESRGAN compact x2 (realesr-animevideov3-x2, ncnn)",
    "realesrgan-x4plus": "Real-ESRGAN x4plus (RRDBNet, ncnn; x4 then downsampled to x2)",
}
X4_LABELS = {
    "realesrgan-compact-x2": "Real-ESRGAN compact x2 applied twice (ncnn)",
    "realesrgan-x4plus": "Real-ESRGAN x4plus (RRDBNet, ncnn, native x4)",
    "flowup": "**flowup x4 (default: detail 0.5 per stage, 5 back-projection steps)**",
    "flowup:d1": "flowup x4, detail 1 per stage (the x2 setting; x4 default up to v0.4)",
    "flowup:ibp5": "flowup x4 default + 5 back-projection steps onto the input",
    "flowup:d0.25": "flowup x4, detail 0.25 per stage",
}


def label(name: str) -> str:
    if X4 and name in X4_LABELS:
        return X4_LABELS[name]
    if name in LABELS:
        return LABELS[name]
    if name.startswith("flowup:euler:"):
        parts = name.split(":")
        steps, details = parts[2], [p[1:] for p in parts[3:] if p.startswith("d")]
        detail = f", detail {details[0]}" if details else ""
        return f"flowup, Euler {steps} step{'s' if steps != '1' else ''}{detail}"
    return name


summary = json.load(open(sys.argv[1]))
rows = {r["method"]: r for r in summary["methods"]}
X4 = "flowup:euler:1" not in rows and "flowup" in rows
print("| method | PSNR-Y (dB) | SSIM-Y | FID | patch-FID | flat-area grain | NFE | s/MP (CPU) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, r in rows.items():
    grain = f"{r['grain']:.2f}" if r.get("grain") is not None else "n/a"
    print(f"| {label(name)} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {r['fid']:.2f} | {r['patch_fid']:.2f} "
          f"| {grain} | {int(r['nfe'])} | {r['time_per_mp_s']:.3g} |")
bicubic, psu, default = rows["bicubic"], rows["psu"], rows["flowup" if X4 else "flowup:euler:1"]
print()
print(f"Default vs bicubic: patch-FID ratio {default['patch_fid'] / bicubic['patch_fid']:.2f} (bar: <= 0.70), "
      f"PSNR-Y {default['psnr_y'] - bicubic['psnr_y']:+.2f} dB (bar: >= -1.5 dB); patch-FID vs PSU "
      f"{default['patch_fid']:.2f} < {psu['patch_fid']:.2f}: {'yes' if default['patch_fid'] < psu['patch_fid'] else 'no'}. "
      f"{bicubic['patches']} patches.")
for baseline in ("bicubic:bp5", "psu:bp5", "realesrgan-compact-x2", "realesrgan-x4plus", "flowup:d1"):
    if baseline in rows:
        print(f"Default vs {label(baseline)}: patch-FID ratio {default['patch_fid'] / rows[baseline]['patch_fid']:.2f}, "
              f"FID {default['fid']:.2f} vs {rows[baseline]['fid']:.2f}, "
              f"PSNR-Y {default['psnr_y'] - rows[baseline]['psnr_y']:+.2f} dB.")
