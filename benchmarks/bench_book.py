"""Book build: a clean build against a rebuild with nothing changed (goal: rebuild <= 10 %).

The book is copied (tracked files only, with the installed npm packages linked) into a
temporary folder, built from scratch there with an empty execution cache and an empty JAX
compilation cache, then built again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import write

ROOT = Path(__file__).resolve().parent.parent


def build(src: Path, env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(["bash", "scripts/build_book.sh"], cwd=src, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> dict:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "book"
        for f in files:
            if (ROOT / f).is_file():
                (src / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, src / f)
        # the npm packages (MathJax, served by the site) are installed, not tracked: `make bench`
        # installs them (node_modules/.installed), the copy uses them
        if not (ROOT / "node_modules" / "mathjax").is_dir():
            raise SystemExit(f"MathJax is missing: run 'npm ci' in {ROOT} (make bench does it; node >= 18 needed)")
        (src / "node_modules").symlink_to(ROOT / "node_modules")
        env = dict(os.environ, VENV=str(ROOT / ".venv"), JAX_COMPILATION_CACHE_DIR=str(Path(tmp) / "jax_cache"))
        clean = build(src, env)
        rebuild = build(src, env)
    result = {"clean_build_s": clean, "no_change_rebuild_s": rebuild, "ratio": rebuild / clean, "goal": "ratio <= 0.10"}
    write("book", result)
    return result


if __name__ == "__main__":
    print(main())
