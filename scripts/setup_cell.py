# Set-up: run this cell first. It makes this notebook's imports work and tells you what it did.
#
# * Needs Python 3.12 or newer (it says so and stops on an older one).
# * Where the course package `gmmcourse` is already installed and current, it does nothing.
# * Elsewhere (Colab, Binder, Anaconda, a plain virtual environment) it installs `gmmcourse`
#   from the course site, with its requirements: jax, jaxlib and genjax at the exact versions
#   the course was built with (they decide the numbers you will see), the other packages
#   only where you lack a compatible version (yours are kept).
# * JAX with GPU support is chosen on Linux x86_64 with an NVIDIA driver, or where JAX is
#   already a GPU build (Colab's GPU runtime); everywhere else (Windows, macOS, no GPU) the CPU build.
#
# To change a choice, set it here or as an environment variable before running the cell:
#   GMMCOURSE_DEVICE = "auto" | "cpu" | "gpu"    which JAX to install
#   GMMCOURSE_PINS   = "core" | "all"            all: every package at the course's tested version
#   GMMCOURSE_SITE   = "https://..."             the course site's address, if it moved
# If Colab asks to restart the session after the install, do so and run this cell again.
COURSE_SITE = ""            # the course site (set when the site is built)
COURSE_VERSION = "0.1.0"    # the course package this notebook was written for
NEEDED = ["gmmcourse"]      # what this notebook imports
EXTRAS = []                 # the optional parts of gmmcourse it needs (pip's gmmcourse[...])
BUNDLE = "student"          # the site's student/ folder, relative to this notebook in a copy of the site


def _gmmcourse_setup(settings):
    import importlib
    import importlib.metadata
    import importlib.util
    import json
    import os
    import platform
    import re
    import shlex
    import shutil
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    def say(text):
        print("[set-up] " + text, flush=True)

    def stop(text):
        raise SystemExit("[set-up] " + text)

    def version_key(v):
        return tuple(int(p) for p in re.findall(r"\d+", v or "0"))

    if sys.version_info < (3, 12):
        stop("this course needs Python 3.12 or newer, and this notebook runs Python " + platform.python_version()
             + ". Install Python 3.12 (python.org, or `conda create -n gmm python=3.12 ipykernel`), choose it as "
             "the notebook's kernel, and run this cell again (Colab already has it).")

    def choice(name, allowed, default):
        value = str(os.environ.get(name) or settings.get(name) or default).strip().lower()
        if value not in allowed:
            stop(name + " must be one of " + ", ".join(allowed) + ", not " + repr(value))
        return value

    device = choice("GMMCOURSE_DEVICE", ("auto", "cpu", "gpu"), "auto")
    pins = choice("GMMCOURSE_PINS", ("core", "all"), "core")
    site = str(os.environ.get("GMMCOURSE_SITE") or settings.get("GMMCOURSE_SITE") or settings["COURSE_SITE"]).rstrip("/")
    dry_run = bool(os.environ.get("GMMCOURSE_SETUP_DRY_RUN"))

    # What is here: the course's own environment (an instructor's or development install, not
    # the student wheel) is left alone, without asking the network anything.
    missing = [m for m in settings["NEEDED"] if importlib.util.find_spec(m) is None]
    try:
        meta = importlib.metadata.metadata("gmmcourse")
        have, student_wheel = meta["Version"], (meta["Summary"] or "").endswith("(student package)")
    except importlib.metadata.PackageNotFoundError:
        have, student_wheel = None, False
    if have and not student_wheel:
        if missing:
            stop("this is the course's own environment (gmmcourse " + have + "), but " + ", ".join(missing)
                 + " cannot be imported: install the course's requirements (make venv), not the student package")
        say("ready: gmmcourse " + have + " is installed (the course's own environment)")
        return

    # Where the wheel comes from: this copy of the site when the notebook sits in one, else the site.
    local = Path(settings["BUNDLE"])
    if (local / "latest.json").is_file():
        source, latest = local.resolve().as_uri(), json.loads((local / "latest.json").read_text())
    elif site:
        source, latest = site + "/student", None
        try:
            with urllib.request.urlopen(source + "/latest.json", timeout=10) as r:
                latest = json.loads(r.read().decode())
        except Exception as e:  # offline, or an old site: fall back to what this notebook knows
            say("could not ask the course site for its newest version (" + type(e).__name__ + "); using this notebook's")
    else:
        source, latest = "", None
    want = (latest or {}).get("version") or settings["COURSE_VERSION"]
    if not missing and version_key(have) >= version_key(want):
        say("ready: gmmcourse " + have + " is installed")
        return
    if not source:
        stop("gmmcourse is not installed and this notebook names no course site: set GMMCOURSE_SITE to the "
             "course site's address, or pip install the student/ wheel of the course site")
    wheel = (latest or {}).get("wheel") or "gmmcourse-" + want + "-py3-none-any.whl"

    # GPU only where JAX's CUDA wheels exist (Linux x86_64) and a driver answers, or where this
    # environment's JAX is already a GPU build (Colab's GPU runtime): never replaced by a CPU one.
    if device == "auto":
        linux = platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")
        cuda_jax = []
        for plugin in ("jax-cuda12-plugin", "jax-cuda13-plugin"):
            try:
                cuda_jax.append(plugin + " " + importlib.metadata.version(plugin))
            except importlib.metadata.PackageNotFoundError:
                pass
        smi, driver = shutil.which("nvidia-smi"), False
        if linux and smi:
            try:
                driver = subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
            except (OSError, subprocess.SubprocessError):
                driver = False
        device = "gpu" if linux and (driver or cuda_jax) else "cpu"
        why = ("an NVIDIA GPU was found" if linux and driver else "this environment's JAX is a GPU build ("
               + cuda_jax[0] + ")" if linux and cuda_jax else "no usable NVIDIA GPU on Linux x86_64")
    else:
        why = "GMMCOURSE_DEVICE"
    extras = list(settings.get("EXTRAS") or []) + (["gpu"] if device == "gpu" else [])
    extra = "[" + ",".join(extras) + "]" if extras else ""
    reqs = source + ("/requirements-student.txt" if pins == "all" else "/requirements-core.txt")
    cmd = [sys.executable, "-m", "pip", "install", "--progress-bar", "off", "-r", reqs,
           "gmmcourse" + extra + " @ " + source + "/" + wheel]
    say(("updating gmmcourse " + have + " to " if have else "installing gmmcourse ") + want + " from " + source)
    say("JAX for the " + device.upper() + " (" + why + "); " + ("every package at the course's tested version"
        if pins == "all" else "jax, jaxlib and genjax pinned, your other packages kept where compatible"))
    if dry_run:
        say("dry run, would run: " + shlex.join(cmd))
        return
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith(("Collecting", "Downloading", "Installing", "Successfully", "ERROR")):
            print("  " + line.rstrip()[:160], flush=True)
    if proc.wait() != 0:
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:]
        stop("the install failed: " + (errors[0] if errors else "pip exited with status " + str(proc.returncode)))
    importlib.invalidate_caches()
    for name in [m for m in sys.modules if m == "gmmcourse" or m.startswith("gmmcourse.")]:
        del sys.modules[name]  # an update is imported afresh
    say("done: gmmcourse " + want + " installed")


_gmmcourse_setup(dict(globals()))
