"""The naive baseline: MediaPipe face detection + face mesh + solvePnP on every full-size frame.

What a research script typically does (decode with OpenCV, run everything at full resolution, no
cropping, no tracking reuse). Used by bench_label.py as the reference cost.

    python benchmarks/naive_mediapipe.py VIDEO
"""

from __future__ import annotations

import sys

import cv2
import mediapipe as mp
import numpy as np

# A few canonical face model points (nose tip, chin, eye corners, mouth corners) for PnP.
IDX = [1, 152, 33, 263, 61, 291]
MODEL = np.array(
    [
        [0, -1.13, 7.48],
        [0, -9.40, 4.26],
        [-4.45, 2.66, 3.17],
        [4.45, 2.66, 3.17],
        [-2.46, -4.34, 4.28],
        [2.46, -4.34, 4.28],
    ],
    dtype=np.float64,
)


def main(path: str) -> None:
    cap = cv2.VideoCapture(path)
    det = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1)
    n = found = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        det.process(rgb)
        res = mesh.process(rgb)
        if res.multi_face_landmarks:
            lm = res.multi_face_landmarks[0].landmark
            pts = np.array([[lm[i].x * w, lm[i].y * h] for i in IDX], dtype=np.float64)
            cam = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)
            cv2.solvePnP(MODEL, pts, cam, None)
            found += 1
        n += 1
    print(f"{n} frames, pose on {found}")


if __name__ == "__main__":
    main(sys.argv[1])
