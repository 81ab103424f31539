"""``python -m train {fit,validate,prepare,export} ...``

- ``prepare``: encode crops of image folders into a latent cache (:mod:`train.latent_cache`);
- ``fit`` / ``validate``: LightningCLI over :class:`train.module.FlowMatchingModule` and
  :class:`train.datamodule.LatentPairDataModule` (``--config configs/train/<recipe>.yaml``; YAML keys
  are the typed constructor arguments; ``--ckpt_path last`` or a path resumes a run);
- ``export``: a checkpoint's EMA weights -> a ``FlowUpPipeline`` folder (:mod:`train.export`).
"""

from __future__ import annotations

import sys


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "--help"
    if command == "prepare":
        from train.prepare_cli import main as prepare_main

        prepare_main(sys.argv[2:])
    elif command == "export":
        from train.export import main as export_main

        export_main(sys.argv[2:])
    else:
        from train.cli import cli_main

        cli_main()


if __name__ == "__main__":
    main()
