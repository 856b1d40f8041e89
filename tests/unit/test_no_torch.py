"""The contract layers and the gunicorn config import no torch (safe in the master, fast in tests)."""

import subprocess
import sys

CODE = """
import sys
import textgen, textgen.api, textgen.schemas, textgen.modes, textgen.settings, textgen.errors
import textgen.gunicorn_conf
app = textgen.create_app()
heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
print(",".join(heavy))
"""


def test_contract_and_server_config_import_no_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"
