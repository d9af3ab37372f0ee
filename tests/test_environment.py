"""The installed environment is the one constraints.txt describes: one OpenCV, the lock's omissions only.

scenedetect pulls opencv-python and mediapipe opencv-contrib-python; both write the same cv2/ folder
as the declared opencv-python-headless, and the last install wins (or uninstalling one breaks the
others). `make install` installs the lock with --no-deps so only the headless build is there.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

OPENCV_DISTS = {
    "opencv-python",
    "opencv-contrib-python",
    "opencv-python-headless",
    "opencv-contrib-python-headless",
}
# What `make install` leaves out on purpose (Makefile UNLOCKED): pip check names exactly these.
OMITTED = {("mediapipe", "jax"), ("mediapipe", "jaxlib"), ("mediapipe", "opencv-contrib-python")}
OMITTED |= {("scenedetect", "opencv-python")}
LOCK = Path(__file__).resolve().parents[1] / "constraints.txt"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_exactly_one_opencv_owns_cv2():
    present = {_norm(d.metadata["Name"]) for d in md.distributions()} & OPENCV_DISTS
    assert present == {"opencv-python-headless"}, (
        f"OpenCV builds installed: {sorted(present)} (run make install)"
    )
    owned = {str(f) for f in md.distribution("opencv-python-headless").files or []}
    cv2_dir = Path(cv2.__file__).parent
    assert f"cv2/{Path(cv2.__file__).name}" in owned and cv2_dir.name == "cv2"
    gray = cv2.cvtColor(np.full((8, 8, 3), 200, np.uint8), cv2.COLOR_BGR2GRAY)
    assert cv2.imencode(".png", gray)[0] and int(gray[0, 0]) == 200


def test_pip_check_reports_only_the_intended_omissions():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True).stdout
    found = set()
    for line in out.splitlines():
        m = re.match(r"(\S+) [\w.+!]+ requires (\S+), which is not installed\.", line)
        assert m, f"pip check: {line}"
        found.add((_norm(m[1]), _norm(m[2].rstrip(","))))
    assert found <= OMITTED, f"pip check: unexpected {sorted(found - OMITTED)}"


def test_installed_versions_are_the_lock():
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    installed = {_norm(d.metadata["Name"]): d.version for d in md.distributions()}
    wrong = {n: (v, installed.get(n)) for n, v in pins.items() if installed.get(n, "").split("+")[0] != v}
    assert not wrong, f"installed != constraints.txt (lock, installed): {wrong} (run make install)"
