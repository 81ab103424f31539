"""``python -m train {prepare,fit,validate,export} ...``

- ``prepare``: encode crops of image folders into a latent cache (:mod:`train.latent_cache`);
- ``fit`` / ``validate``: LightningCLI over :class:`train.module.FlowMatchingModule` and
  :class:`train.datamodule.LatentPairDataModule` (``--config configs/train/<recipe>.yaml``; YAML keys
  are the typed constructor arguments; ``--ckpt_path last`` or a path resumes a run);
- ``export``: a checkpoint's EMA weights -> a ``FlowUpPipeline`` folder (:mod:`train.export`);
- ``fit-codec`` / ``export-codec``: distil the lean codec's new layers from TAEF2, and join the
  parts into a codec folder (:mod:`train.lean_codec`).
"""

from __future__ import annotations

import sys


USAGE = """\
usage: python -m train COMMAND ...

commands:
  prepare    encode crops of image folders into a latent cache (train.latent_cache)
  fit        train a flow model: LightningCLI, --config configs/train/<recipe>.yaml;
             --ckpt_path last resumes a killed run
  validate   run the validation loop of a recipe on a checkpoint
  test, predict  LightningCLI's other subcommands (not used by the recipes)
  export     a checkpoint's EMA weights -> a FlowUpPipeline folder (fp16 safetensors)
  fit-codec  distil the lean codec's encoder stem or decoder head from TAEF2 (LightningCLI,
             --config configs/train/lean_codec_{encoder,decoder}.yaml)
  export-codec  join lean-codec checkpoints into a codec folder (fp16 safetensors)

examples:
  python -m train prepare --images ../shared/data/train --out cache/taef2-x2-320
  python -m train fit --config configs/train/cpu.yaml
  python -m train export runs/taef2-x2-cpu/checkpoints/last.ckpt my-model/

Run 'python -m train COMMAND --help' for a command's options (fit --help lists every YAML key).
"""


def main() -> None:
    """Dispatch ``python -m train COMMAND``; no command or ``-h`` / ``--help`` prints the commands."""
    command = sys.argv[1] if len(sys.argv) > 1 else "--help"
    if command in ("-h", "--help", "help"):
        print(USAGE, end="")
        sys.exit(0 if len(sys.argv) > 1 else 2)
    if command == "prepare":
        from train.prepare_cli import main as prepare_main

        prepare_main(sys.argv[2:])
    elif command == "export":
        from train.export import main as export_main

        export_main(sys.argv[2:])
    elif command == "fit-codec":
        from train.lean_codec import fit_main

        fit_main(["fit", *sys.argv[2:]])
    elif command == "export-codec":
        from train.lean_codec import export_main

        export_main(sys.argv[2:])
    else:
        from train.cli import cli_main

        cli_main()


if __name__ == "__main__":
    main()
