"""Finding near-duplicate photos: the same picture re-encoded, resized, watermarked or re-cropped.

Why not only a perceptual hash: in the athletes data most near-duplicates are *crops* (a face
close-up cut out of a full-body press photo, at 0.37-0.56 of the original scale) or re-crops that
change the aspect ratio. A global hash (pHash, dHash) or a global CNN embedding of the whole frame
changes completely under such crops (measured: the pHash distance of those pairs is no smaller
than that of unrelated photos, and MobileNetV2 embeddings rank one crop 117th among its
neighbours). Local features do not care about framing, so the method is:

1. **Candidates from local features.** SIFT keypoints (OpenCV) on a grey thumbnail whose shorter
   side is :data:`THUMB_SIDE` px. All descriptors of all images go into one approximate
   nearest-neighbour search; a keypoint votes for another image when its nearest descriptor
   there passes Lowe's ratio test. Image pairs with at least ``min_votes`` votes are candidates.
2. **Geometry.** A RANSAC affine fit between the voting keypoints; the scale must be plausible.
3. **Photometric proof.** The image whose content is larger is warped into the other's frame and
   the two are compared by normalised cross-correlation of their *band-pass* (difference of
   Gaussians) images over the overlap. Flat backgrounds carry no band-pass signal, so two different
   photos from the same studio session (same grey wall, same shirt) score low, while the same
   photo scores high whatever its crop, compression or resizing. Pairs at or above
   ``min_ncc`` are near-duplicates.

A 64-bit DCT perceptual hash proposes candidates too (pairs within ``max_phash_distance`` bits), which
covers textureless images where SIFT finds no keypoints. A pHash match is only a candidate: tightly
aligned face crops of *different* people share their low-frequency layout, which is all 64 DCT bits
see (issue 18: 21 cross-person pairs at distance 4 among 10,240 aligned face crops). Each
pHash candidate is confirmed like a local-feature one, by band-pass NCC >= ``min_ncc``: aligned by
its keypoints when SIFT gives an alignment, otherwise frame to frame (pHash already assumes the
whole frames correspond), refined by a small ECC correction. When neither image has band-pass
texture the NCC is meaningless, and the blurred images must agree instead (:func:`_lowpass_agreement`).
A pair proposed by both branches is judged once and counted under pHash. Near-duplicate groups are
built from confirmed pairs only; :func:`search_near_duplicates` also counts, per branch, the
candidates considered and rejected.

Measured on the 431 distinct contents of the athletes data (pairs checked by eye): the seven
same-photo pairs scored 0.870-0.996 band-pass NCC, two near-identical frames of one portrait
sitting 0.837, and every other candidate pair (burst frames with a different pose, same studio
backdrop, shared watermark) at most 0.755; the threshold 0.80 sits in that gap. On 112x112 LFW
face crops (150 different people), frame-to-frame band-pass NCC after the ECC correction was at
most 0.49 over all 11,175 pairs, and at most 0.67 for pairs given one common low-pass base (48 of
74 such pairs within pHash distance 4), while JPEG re-encodes, 2-4 px re-crops and colour shifts of
a crop scored >= 0.98. Features are computed per image and compared in a fixed order, so the
result does not depend on thread scheduling.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import cv2
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

THUMB_SIDE = 192  # shorter side of the grey thumbnail the features are computed on
MAX_KEYPOINTS = 300

# Frame-to-frame confirmation of pHash candidates (see _confirm_whole_frame). The ECC correction
# may only nudge the alignment: a re-encode or slight re-crop needs a few pixels and percent,
# while an unbounded ECC fit between two different images can collapse onto a sliver of overlap
# (measured on different faces: NCC up to 0.89 over such slivers, at most 0.49 within the bounds).
ECC_MAX_LINEAR = 0.15  # largest |entry| of (linear part - identity)
ECC_MAX_SHIFT = 0.10  # largest translation, as a fraction of the shorter side
# Textureless pairs: band-pass standard deviation (grey levels, inside the frame's margin) under
# which an image counts as having no texture. Flat colours and smooth gradients score <= 0.75 even
# after JPEG at quality 40; 112 px face crops score >= 7.9, the athletes photos >= 6.5.
TEXTURE_MIN_STD = 1.5
# Such pairs are confirmed when their blurred images agree: brightness offset and the RMS of what
# is left after removing it, in grey levels. Gradients re-encoded at JPEG 40 left an RMS <= 0.53;
# the offset allowance (~6% of the range) admits a brightness or colour shift of the same picture.
# Beyond either it is another picture: textureless images carry no other evidence.
LOWPASS_MAX_OFFSET = 16.0
LOWPASS_MAX_RMS = 3.0


@dataclass(frozen=True)
class NearDuplicateParams:
    """Thresholds of the near-duplicate search (reported with the results)."""

    min_ncc: float = 0.80  # band-pass normalised cross-correlation over the overlap
    max_phash_distance: int = 4  # of 64 bits: a candidate, confirmed by min_ncc
    min_votes: int = 8  # ratio-test keypoint matches needed to try a pair
    min_inliers: int = 8  # RANSAC inliers needed to trust the alignment
    min_scale: float = 0.2  # plausible zoom between the two framings
    max_scale: float = 5.0
    min_overlap_px: int = 1500  # overlap area, in pixels of the coarser thumbnail

    def describe(self) -> str:
        return (f"candidates from SIFT keypoint matching or DCT pHash distance "
                f"<= {self.max_phash_distance}/64 bits, aligned (RANSAC, or frame to frame + ECC) and "
                f"confirmed by band-pass NCC over the overlap >= {self.min_ncc:.2f} (thumbnails "
                f"{THUMB_SIDE} px; textureless pairs by their blurred images)")

    def to_json(self) -> dict:
        return {"method": "sift-ransac-bandpass-ncc+phash-candidates", "description": self.describe(),
                "min_ncc": self.min_ncc, "max_phash_distance": self.max_phash_distance,
                "thumbnail_side": THUMB_SIDE, "min_votes": self.min_votes,
                "min_inliers": self.min_inliers, "texture_min_std": TEXTURE_MIN_STD,
                "lowpass_max_offset": LOWPASS_MAX_OFFSET, "lowpass_max_rms": LOWPASS_MAX_RMS}


@dataclass
class Fingerprint:
    """What the near-duplicate search needs from one image, computed once while scanning."""

    phash: int
    gray: np.ndarray = field(repr=False)  # uint8 thumbnail, shorter side THUMB_SIDE
    points: np.ndarray = field(repr=False)  # (n, 2) float32 keypoint positions in ``gray``
    descriptors: np.ndarray = field(repr=False)  # (n, 128) uint8 SIFT descriptors


@dataclass(frozen=True)
class NearDuplicatePair:
    """Two distinct contents judged to be the same photo. ``a`` and ``b`` are indexes into the input."""

    a: int
    b: int
    method: str  # the branch that proposed it: "local-features" or "phash"
    ncc: float | None  # band-pass NCC; None only for a textureless pair (see lowpass_rms)
    phash_distance: int
    scale: float | None  # zoom from a's framing to b's
    inliers: int  # RANSAC inliers; 0 when aligned frame to frame
    lowpass_rms: float | None = None  # textureless pair: blurred images' RMS difference


@dataclass
class BranchCounts:
    """Candidate pairs one branch proposed (``considered``) and how many were confirmed."""

    considered: int = 0
    accepted: int = 0

    @property
    def rejected(self) -> int:
        return self.considered - self.accepted

    def to_json(self) -> dict:
        return {"considered": self.considered, "accepted": self.accepted, "rejected": self.rejected}


@dataclass
class NearDuplicateSearch:
    """Result of :func:`search_near_duplicates`: accepted pairs and per-branch candidate counts."""

    pairs: list[NearDuplicatePair]
    candidates: dict[str, BranchCounts]  # "phash", "local-features"


_DCT_N = 32


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))


_DCT = _dct_matrix(_DCT_N)
# Coefficients smaller than a cosine of half a grey level's amplitude (0.5 * (N/2)^2 in the units of
# the unnormalised DCT) are rounding noise: in a smooth image (gradient, flat colour) most of the 63
# are, the median sits among them, and a JPEG re-encode flipped 20-30 bits. Zeroed, they all fall
# on the same side of the median. On photos this changes ~1 bit per image on average.
_PHASH_DEAD_ZONE = 0.5 * (_DCT_N / 2) ** 2


def phash(gray: Image.Image) -> int:
    """64-bit DCT perceptual hash: the signs of the 8x8 lowest frequencies against their median."""
    small = np.asarray(gray.resize((_DCT_N, _DCT_N), Image.BOX), dtype=np.float64)
    low = (_DCT @ small @ _DCT.T)[:8, :8].ravel()
    low[np.abs(low) < _PHASH_DEAD_ZONE] = 0.0
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return int(np.packbits(bits).view(">u8")[0])


def compute_fingerprint(image: Image.Image) -> Fingerprint:
    """Fingerprint an RGB image (any size; it is reduced to a thumbnail first)."""
    gray = image.convert("L")
    scale = THUMB_SIDE / min(gray.size)
    if scale < 1:
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                           Image.BILINEAR)
    arr = np.asarray(gray, dtype=np.uint8)
    sift = cv2.SIFT_create(nfeatures=MAX_KEYPOINTS)
    keypoints, desc = sift.detectAndCompute(arr, None)
    if desc is None or not keypoints:
        points = np.zeros((0, 2), np.float32)
        desc_u8 = np.zeros((0, 128), np.uint8)
    else:
        points = np.array([kp.pt for kp in keypoints], dtype=np.float32)
        # OpenCV's SIFT descriptors are whole numbers in 0..255 stored as float: keep 1/4 the memory.
        desc_u8 = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
    return Fingerprint(phash(gray), arr, points, desc_u8)


def _bandpass(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), 1.0) - cv2.GaussianBlur(img, (0, 0), 4.0)


class _Evidence(NamedTuple):
    ncc: float | None
    scale: float
    inliers: int
    lowpass_rms: float | None = None


def _bandpass_ncc(fixed: np.ndarray, moving: np.ndarray, to_fixed: np.ndarray,
                  min_overlap_px: int) -> float | None:
    """Band-pass NCC of float32 ``moving`` warped by ``to_fixed`` against ``fixed`` over the overlap.

    None when the overlap is too small or flat on one side (the correlation is then undefined).
    """
    h, w = fixed.shape
    warped = cv2.warpAffine(moving, to_fixed, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpAffine(np.ones_like(moving), to_fixed, (w, h), flags=cv2.INTER_NEAREST,
                          borderValue=0)
    # Stay clear of the overlap's border, where the band-pass filter sees the edge of the warp.
    mask = cv2.erode((mask > 0.5).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    if int(mask.sum()) < min_overlap_px:
        return None
    fixed_f = fixed.astype(np.float32)
    x = _bandpass(fixed_f)[mask]
    y = _bandpass(np.where(mask, warped, fixed_f))[mask]
    x = x - x.mean()
    y = y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    if denom <= 1e-6:
        return None
    return float((x * y).sum() / denom)


def _verify(fa: Fingerprint, fb: Fingerprint, src: np.ndarray, dst: np.ndarray,
            params: NearDuplicateParams) -> _Evidence | None:
    """Align a to b from matched points and return the band-pass NCC evidence, or None."""
    matrix, inliers = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if matrix is None or inliers is None:
        return None
    n_inliers = int(inliers.sum())
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if n_inliers < params.min_inliers or not params.min_scale < scale < params.max_scale:
        return None
    # Compare in the frame of the image whose content is smaller (coarser): upsampling the other
    # would blur it and lower the score of true pairs.
    if scale >= 1:  # b shows the content larger: warp b into a's frame
        fixed, moving, to_fixed = fa.gray, fb.gray, cv2.invertAffineTransform(matrix)
    else:
        fixed, moving, to_fixed = fb.gray, fa.gray, matrix
    moving_f = moving.astype(np.float32)
    shrink = min(scale, 1 / scale)
    if shrink < 0.9:  # warpAffine samples bilinearly: low-pass first so shrinking does not alias
        moving_f = cv2.GaussianBlur(moving_f, (0, 0), 0.5 / shrink)
    ncc = _bandpass_ncc(fixed, moving_f, to_fixed, params.min_overlap_px)
    return None if ncc is None else _Evidence(ncc, scale, n_inliers)


def _texture(img: np.ndarray) -> float:
    """Band-pass standard deviation inside a margin (the frame's edge is not texture)."""
    m = min(12, min(img.shape) // 4)  # ~3 sigma of the band-pass's wider Gaussian
    return float(_bandpass(img)[m:img.shape[0] - m, m:img.shape[1] - m].std())


def _ecc_correction(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Small affine map from ``moving`` to ``fixed`` (same size) by ECC; identity if it fails or strays."""
    identity = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    try:  # on blurred images: ECC aligns the layout; the band-pass NCC then judges the detail
        _, warp = cv2.findTransformECC(cv2.GaussianBlur(fixed, (0, 0), 2.0),
                                       cv2.GaussianBlur(moving, (0, 0), 2.0), identity.copy(),
                                       cv2.MOTION_AFFINE, criteria, None, 5)
    except cv2.error:  # did not converge (e.g. uncorrelated images)
        return identity
    if (np.abs(warp[:, :2] - np.eye(2)).max() > ECC_MAX_LINEAR
            or np.abs(warp[:, 2]).max() > ECC_MAX_SHIFT * min(fixed.shape)):
        return identity
    # ECC's warp maps fixed's coordinates into moving's; warping moving into fixed needs the inverse.
    return cv2.invertAffineTransform(warp)


def _lowpass_agreement(fixed: np.ndarray, moving: np.ndarray) -> float | None:
    """RMS difference of two textureless images' blurred versions after removing a brightness
    offset, or None when the offset or the RMS is too large for the same picture."""
    diff = cv2.GaussianBlur(moving, (0, 0), 4.0) - cv2.GaussianBlur(fixed, (0, 0), 4.0)
    offset = float(diff.mean())
    rms = float(np.sqrt(((diff - offset) ** 2).mean()))
    if abs(offset) > LOWPASS_MAX_OFFSET or rms > LOWPASS_MAX_RMS:
        return None
    return rms


def _confirm_whole_frame(fa: Fingerprint, fb: Fingerprint,
                         params: NearDuplicateParams) -> _Evidence | None:
    """Confirm a pHash candidate that has no keypoint alignment, taking frame for frame."""
    # pHash squeezes whole frames to 32x32, so its candidates are taken to show the same frame:
    # the larger thumbnail is resized (aspect ratio included) onto the smaller one.
    swap = fa.gray.size > fb.gray.size
    fixed, moving = (fb.gray, fa.gray) if swap else (fa.gray, fb.gray)
    h, w = fixed.shape
    fixed_f = fixed.astype(np.float32)
    moving_f = cv2.resize(moving.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    scale = float(np.sqrt(fb.gray.size / fa.gray.size))  # zoom from a's thumbnail to b's
    if _texture(fixed_f) < TEXTURE_MIN_STD and _texture(moving_f) < TEXTURE_MIN_STD:
        rms = _lowpass_agreement(fixed_f, moving_f)
        return None if rms is None else _Evidence(None, scale, 0, rms)
    # The frames overlap whole (ECC moves them by a few %): min_overlap_px guards keypoint
    # alignments that may cover a corner, and would turn away every image under ~50x50 px here.
    min_overlap = min(params.min_overlap_px, h * w // 2)
    ncc = _bandpass_ncc(fixed_f, moving_f, _ecc_correction(fixed_f, moving_f), min_overlap)
    return None if ncc is None else _Evidence(ncc, scale, 0)


def _popcount64(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(values.shape + (8,))
    return np.unpackbits(as_bytes, axis=-1).sum(-1)


# Above this distance the pigeonhole blocks get so narrow (<= 4 bits) that nearly every pair shares
# one: comparing all pairs is then as cheap and simpler.
_PIGEONHOLE_MAX_DISTANCE = 15


def phash_pairs(hashes: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
    """All pairs (i < j) of 64-bit ``hashes`` at most ``max_distance`` bits apart.

    Comparing every pair costs n^2/2 (10,000 images: 5e7 comparisons). By the pigeonhole
    principle two hashes within ``d`` bits agree exactly on at least one of ``d + 1`` disjoint bit
    blocks, so only pairs sharing a block's value are compared (multi-index hashing, Norouzi et
    al. 2012): sorting each block's values puts those pairs side by side. Same result as comparing
    all pairs; on spread-out hashes the work grows like n log n until the ~13-bit blocks fill up.
    """
    n = len(hashes)
    pairs: set[tuple[int, int]] = set()
    if n < 2 or max_distance < 0:
        return pairs
    hashes = np.asarray(hashes, dtype=np.uint64)
    if max_distance > _PIGEONHOLE_MAX_DISTANCE:
        for i in range(n - 1):
            dist = _popcount64(hashes[i] ^ hashes[i + 1:])
            pairs.update((i, i + 1 + int(off)) for off in np.nonzero(dist <= max_distance)[0])
        return pairs
    blocks = max_distance + 1
    edges = [round(64 * k / blocks) for k in range(blocks + 1)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        keys = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        # Equal keys are runs in sorted order: pair each element with the one k places on, for
        # k = 1, 2, ... until no run is that long.
        for k in range(1, n):
            same = np.nonzero(ordered[k:] == ordered[:-k])[0]
            if len(same) == 0:
                break
            a, b = order[same], order[same + k]
            i, j = np.minimum(a, b), np.maximum(a, b)
            close = _popcount64(hashes[i] ^ hashes[j]) <= max_distance
            pairs.update(zip(i[close].tolist(), j[close].tolist()))
    return pairs


def find_near_duplicates(fingerprints: Sequence[Fingerprint],
                         params: NearDuplicateParams = NearDuplicateParams()) -> list[NearDuplicatePair]:
    """All pairs (i < j) of the given distinct images that are near-duplicates, sorted by (i, j)."""
    return search_near_duplicates(fingerprints, params).pairs


def search_near_duplicates(fingerprints: Sequence[Fingerprint],
                           params: NearDuplicateParams = NearDuplicateParams()) -> NearDuplicateSearch:
    """Propose candidate pairs (pHash, local features), confirm each photometrically.

    Pass one fingerprint per distinct content (exact duplicates collapsed beforehand). Pairs are
    judged one by one in (i, j) order, so the result is deterministic.
    """
    counts = {"phash": BranchCounts(), "local-features": BranchCounts()}
    n = len(fingerprints)
    if n < 2:
        return NearDuplicateSearch([], counts)
    hashes = np.array([f.phash for f in fingerprints], dtype=np.uint64)
    by_phash = phash_pairs(hashes, params.max_phash_distance)
    by_features = {pair: (src, dst) for pair, src, dst in _candidate_matches(fingerprints, params)}

    found: list[NearDuplicatePair] = []
    for i, j in sorted(by_phash | by_features.keys()):
        method = "phash" if (i, j) in by_phash else "local-features"
        evidence = None
        if (i, j) in by_features:
            evidence = _verify(fingerprints[i], fingerprints[j], *by_features[(i, j)], params)
        if evidence is None and method == "phash":
            evidence = _confirm_whole_frame(fingerprints[i], fingerprints[j], params)
        counts[method].considered += 1
        log.debug("%s candidate %d-%d: %s", method, i, j, evidence)
        if evidence is None or (evidence.ncc is not None and evidence.ncc < params.min_ncc):
            continue
        counts[method].accepted += 1
        dist = int(_popcount64(np.array([hashes[i] ^ hashes[j]], dtype=np.uint64))[0])
        found.append(NearDuplicatePair(
            i, j, method, None if evidence.ncc is None else round(evidence.ncc, 4), dist,
            round(evidence.scale, 3), evidence.inliers,
            None if evidence.lowpass_rms is None else round(evidence.lowpass_rms, 3)))
    return NearDuplicateSearch(found, counts)


def _candidate_matches(fingerprints: Sequence[Fingerprint], params: NearDuplicateParams):
    """Yield ((i, j), points_in_i, points_in_j) for image pairs with enough ratio-test votes."""
    owners = np.concatenate([np.full(len(f.descriptors), k, dtype=np.int64)
                             for k, f in enumerate(fingerprints)])
    if len(owners) == 0:
        return
    descriptors = np.concatenate([f.descriptors for f in fingerprints]).astype(np.float32)
    points = np.concatenate([f.points for f in fingerprints])
    k = min(6, len(owners))
    # Approximate search over all descriptors at once: one query instead of n^2/2 pair matchings.
    # Input order is fixed (sorted paths), and OpenCV's FLANN seeds its own random trees, so the
    # candidates are the same from run to run.
    cv2.setRNGSeed(0)
    matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 32})
    neighbours = matcher.knnMatch(descriptors, descriptors, k=k)
    votes: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for q, row in enumerate(neighbours):
        if not row:
            continue
        own = owners[q]
        per_image: dict[int, list] = {}
        for m in row:
            other = int(owners[m.trainIdx])
            if other != own:
                per_image.setdefault(other, []).append(m)
        last = row[-1].distance
        for other, matches in per_image.items():
            # Lowe's ratio test within the other image: its best descriptor must be clearly better
            # than its second best (or than the worst neighbour seen, when it had only one).
            second = matches[1].distance if len(matches) > 1 else last
            if matches[0].distance < 0.75 * second:
                if own < other:
                    votes[(int(own), other)].append((q, matches[0].trainIdx))
                else:
                    votes[(other, int(own))].append((matches[0].trainIdx, q))
    for pair in sorted(votes):
        matches = sorted(set(votes[pair]))  # a match can be voted from both sides
        if len(matches) < params.min_votes:
            continue
        src = points[[a for a, _ in matches]]
        dst = points[[b for _, b in matches]]
        yield pair, src, dst
