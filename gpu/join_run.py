"""Pack a model folder into files a GPU machine may send back, and join them again here.

A lent GPU machine returns at most 8 files of at most 16 MiB each; the x2 flow alone is 20 MB in
fp16. ``--split`` cuts every ``*.safetensors`` of a model folder into parts of ``--part-mib`` MiB
and writes ``weights.json`` (each file's size, SHA-256 and parts) beside them; everything else of
the folder travels in ``run.tar.gz`` (gpu/train.sh). Joining checks every size and hash, so a
missing or damaged part is one clear error, never a broken model.

    python gpu/join_run.py --split MODEL_DIR OUT_DIR [--part-mib 15]   # on the GPU machine
    python gpu/join_run.py FILES_AT TARGET_DIR                         # here: run.tar.gz + parts -> model
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tarfile
from pathlib import Path

MANIFEST = "weights.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_weights(model_dir: Path, out_dir: Path, part_mib: float = 15.0) -> list[Path]:
    """Cut ``model_dir``'s safetensors into ``out_dir`` parts; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    part_bytes = int(part_mib * 2**20)
    manifest, written = {}, []
    for index, weights in enumerate(sorted(model_dir.rglob("*.safetensors"))):
        data = weights.read_bytes()
        parts = []
        for k, start in enumerate(range(0, max(len(data), 1), part_bytes)):
            part = out_dir / f"weights{index}.part{k:02d}"
            part.write_bytes(data[start : start + part_bytes])
            parts.append(part.name)
            written.append(part)
        manifest[str(weights.relative_to(model_dir))] = {
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "parts": parts,
        }  # fmt: skip
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return [*written, out_dir / MANIFEST]


def join_run(files_at: Path, target: Path) -> Path:
    """Rebuild the model folder ``target`` from ``run.tar.gz``, ``weights.json`` and the parts."""
    manifest_path = files_at / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{files_at}: no {MANIFEST} (not the output of gpu/train.sh?)")
    manifest = json.loads(manifest_path.read_text())
    staging = target.with_name(target.name + ".joining")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    archive = files_at / "run.tar.gz"
    if archive.is_file():
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
    for name, entry in manifest.items():
        missing = [p for p in entry["parts"] if not (files_at / p).is_file()]
        if missing:
            shutil.rmtree(staging)
            raise FileNotFoundError(f"{name}: missing part(s) {', '.join(missing)} in {files_at}")
        out = staging / name
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as f:
            for part in entry["parts"]:
                f.write((files_at / part).read_bytes())
        if out.stat().st_size != entry["bytes"] or _sha256(out) != entry["sha256"]:
            shutil.rmtree(staging)
            raise ValueError(f"{name}: the joined file does not match its size / SHA-256 in {MANIFEST}")
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="FILES_AT (join) or MODEL_DIR (--split)")
    parser.add_argument("target", type=Path, help="TARGET_DIR (join) or OUT_DIR (--split)")
    parser.add_argument("--split", action="store_true", help="cut MODEL_DIR's weights into OUT_DIR")
    parser.add_argument("--part-mib", type=float, default=15.0, help="part size in MiB (default 15)")
    args = parser.parse_args(argv)
    try:
        if args.split:
            files = split_weights(args.source, args.target, args.part_mib)
            print(f"join_run: {len(files)} files in {args.target}")
        else:
            print(f"join_run: model folder {join_run(args.source, args.target)}")
    except (OSError, ValueError) as err:
        print(f"join_run: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
