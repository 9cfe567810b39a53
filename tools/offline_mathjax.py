"""Put MathJax beside the course's HTML pages so their formulas render without a network.

nbconvert's pages load MathJax 2.7 from a CDN by default. The Jupyter project's
``jupyter-server-mathjax`` package ships the same MathJax 2.7 files (what the classic notebook
served offline); this tool copies them into ``DEST`` and prints the ``mathjax_url`` nbconvert
should use (relative to the pages):

    jupyter nbconvert --to html --HTMLExporter.mathjax_url="$(python tools/offline_mathjax.py build/html/mathjax)" ...

The files come from the installed package if there is one, else from its wheel fetched with
``pip download`` (the package needs jupyter-server at run time, the files do not) and checked
against a pinned sha256. If neither works (offline, no cache) it warns on stderr and prints the
CDN address, so the pages still build and render formulas when online.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "jupyter-server-mathjax==0.2.6"
WHEEL_SHA256 = "416389dde2010df46d5fbbb7adb087a5607111070af65a1445391040f2babb5e"
STATIC = "jupyter_server_mathjax/static/"
CONFIG = "MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"  # the config the package ships
CDN = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js?config=TeX-AMS_CHTML-full,Safe"


def from_installed(dest: Path) -> bool:
    try:
        import jupyter_server_mathjax
    except ImportError:
        return False
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", dest, dirs_exist_ok=True)
    return True


def extract_static(wheel: Path, dest: Path) -> None:
    """Copy the wheel's ``static/`` folder (MathJax) to ``dest`` after checking its sha256."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise ValueError(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.startswith(STATIC) and not member.endswith("/"):
                target = dest / member[len(STATIC):]
                if ".." in Path(member).parts:
                    raise ValueError(f"{wheel}: unsafe member {member}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(member))


def from_wheel(dest: Path) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        pip = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                              "--dest", tmp, PACKAGE], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if pip.returncode != 0 or len(wheels) != 1:
            print(f"offline_mathjax: pip download {PACKAGE} failed:\n{pip.stderr[-1000:]}", file=sys.stderr)
            return False
        extract_static(wheels[0], dest)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder for MathJax, inside the HTML folder")
    args = parser.parse_args(argv)
    if (args.dest / "MathJax.js").is_file() or from_installed(args.dest) or from_wheel(args.dest):
        print(f"{args.dest.name}/{CONFIG}")
    else:
        print("offline_mathjax: no local MathJax; the pages load it from a CDN (formulas need a network)",
              file=sys.stderr)
        print(CDN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
