#!/usr/bin/env python3
"""Pack a model folder as a SageMaker model artifact: ``model.tar.gz`` with the model files at its root.

SageMaker unpacks the archive into /opt/ml/model, where textgen finds the model.
Usage: ``python3 scripts/model_artifact.py MODEL_DIR OUT.tar.gz``. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
from pathlib import Path

# Files a served model needs; anything else in the folder (caches, locks, .gguf sources) stays out.
SKIP_PREFIXES = (".",)


def pack(model_dir: Path, out: Path) -> list[str]:
    """Write ``out`` from ``model_dir``; return the archive's member names."""
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"{model_dir} is not a model folder (no config.json); run `make model` first")
    if not any(model_dir.glob("*.safetensors")):
        raise SystemExit(f"{model_dir} holds no .safetensors weights; textgen serves safetensors only")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    names = []
    with tarfile.open(tmp, "w:gz") as archive:
        for path in sorted(model_dir.rglob("*")):
            relative = path.relative_to(model_dir)
            if path.is_dir() or any(part.startswith(SKIP_PREFIXES) for part in relative.parts):
                continue
            archive.add(path, arcname=str(relative), recursive=False)
            names.append(str(relative))
    os.replace(tmp, out)
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    names = pack(args.model_dir, args.out)
    size = args.out.stat().st_size / 1048576
    print(f"wrote {args.out} ({size:.1f} MiB): {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
