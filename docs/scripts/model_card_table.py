"""Print the compact model-card table from an eval run: `python docs/scripts/model_card_table.py results/model_card_set14/summary.json`."""
import json, sys
s = json.load(open(sys.argv[1]))
m = {r["method"]: r for r in s["methods"]}
print("| method | PSNR-Y (dB) | SSIM-Y | FID | patch-FID | NFE | s/MP (CPU) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, r in m.items():
    label = {"bicubic": "bicubic", "psu": "PSU (codec round trip of bicubic, no flow)"}.get(name, name.replace("flowup:euler:", "flowup, Euler ") + (" step" if name.endswith(":1") else " steps" if name.startswith("flowup") else ""))
    if name == "flowup:euler:1":
        label = "**flowup, Euler 1 step (default)**"
    print(f"| {label} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {r['fid']:.2f} | {r['patch_fid']:.2f} | {int(r['nfe'])} | {r['time_per_mp_s']:.3g} |")
b, p, f = m["bicubic"], m["psu"], m["flowup:euler:1"]
print()
print(f"Default (1 step) vs bicubic: patch-FID ratio {f['patch_fid']/b['patch_fid']:.2f} (bar: <= 0.70), "
      f"PSNR-Y {f['psnr_y']-b['psnr_y']:+.2f} dB (bar: >= -1.5 dB); patch-FID vs PSU {f['patch_fid']:.2f} < {p['patch_fid']:.2f}: "
      f"{'yes' if f['patch_fid'] < p['patch_fid'] else 'no'}. {b['patches']} patches.")
