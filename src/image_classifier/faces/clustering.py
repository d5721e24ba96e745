"""Grouping face descriptors into people: the maths of ``image-classifier group`` (numpy only).

The method, chosen by measurement on two folders of people (``bench/group.py``,
docs/benchmarks.md, "Grouping faces into people"):

1. **Core groups**: Chinese whispers (Biemann 2006; dlib's ``chinese_whispers_clustering``) on the
   graph whose edges join two faces closer than :data:`CORE_DISTANCE` (0.5), each edge weighted by
   the two faces' similarity, 1 - distance (Biemann's weighted form; dlib's clustering counts
   edges). A fixed threshold at dlib's same-person distance (0.6, or 0.55) lets a handful of close
   pairs of two different people chain their groups together (on ``lfw_people12`` 386 of 150,000
   pairs of different people lie under 0.55, and Chinese whispers at 0.55 merges 12 people into
   10); under 0.5 the graph joins few pairs of different people, so the core groups are pure, but
   it misses faces of poorer photos (on the athletes' web photos 27 of the 320 one-face photos end
   outside a core group of 3 faces). The weights make the edges between two look-alikes (all
   near 0.5) count for less than a person's own, closer pairs: on random samples of 80 % of
   ``lfw_people12``'s photos, counted edges (with the main faces first, below) merged two of its
   people into one group in 5 of 40 samples (Hans Blix and John Ashcroft in 4, Jean Chretien and
   Jacques Chirac in 1), weighted edges in none (``bench/group.py samples``).
2. **Attach**: each face left outside a core group of at least ``min_size`` faces joins the
   nearest core group whose *centre* (the mean descriptor of its faces) is within
   :data:`ATTACH_DISTANCE` (0.6, dlib's same-person distance). A centre averages out the noise of
   single photos, so it is a steadier thing to compare a poor face with than any one face, and
   one face's pull cannot chain two groups together: faces attach, groups never merge.
3. Faces in no group are **singles** (``-1``).

**Main faces first** (``first``; ``group`` and ``check`` pass :func:`main_faces`): steps 1-2 run
on each photo's main (largest) face alone, then again on every face with those groups fixed, so
the other faces join the main faces' groups or form groups of their own but never move a main
face. Faces in the background (fans, team-mates, a crowd) are small, blurred and turned; their
descriptors lie near one another in the middle of the descriptor space, and clustered together
with the main faces they formed a core group that took the poor main faces of several people (on
the athletes: a group of 18 faces of three people). A photo is taken of its main face, and a
photo is filed under its largest grouped face, so the main faces are grouped as if the
background were not there.

Two faces of one photo are never the same person: they share no edge, Chinese whispers never
gives a face the label another face of its photo holds, and a face never attaches to a group that
holds another face of its photo.

Growing (``group`` run again after adding photos) is the same procedure with the faces already
grouped as fixed seeds: their labels never change, new faces propagate from them or form new
groups (label propagation with clamped labels).
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

# The distances and the smallest group (see the module docstring), declared where options read them.
from image_classifier.faces.thresholds import ATTACH_DISTANCE, CORE_DISTANCE, MIN_GROUP_SIZE
#: Chinese whispers stops when a pass changes no label, or after this many passes.
MAX_PASSES = 100
#: ``--split`` lowers the core distance by this step until the group comes apart.
SPLIT_STEP = 0.05
SINGLE = -1


@dataclass(frozen=True)
class ClusterParams:
    """The clustering's settings; the defaults are the measured choice."""

    core_distance: float = CORE_DISTANCE
    attach_distance: float = ATTACH_DISTANCE
    min_size: int = MIN_GROUP_SIZE
    seed: int = 0
    #: Weigh the core graph's edges by similarity (1 - distance) instead of counting them.
    weighted: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.core_distance <= 2:
            raise ValueError(f"the core distance must be in (0, 2], not {self.core_distance}")
        if not 0 <= self.attach_distance <= 2:
            raise ValueError(f"the attach distance must be in [0, 2], not {self.attach_distance}")
        if self.min_size < 1:
            raise ValueError(f"the minimum group size must be at least 1, not {self.min_size}")


@dataclass
class Clustering:
    """Which group each face is in (``labels``, :data:`SINGLE` for none) and how it got there."""

    labels: np.ndarray  # (n,) int
    centres: dict[int, np.ndarray] = field(repr=False)  # group -> mean descriptor of its faces
    distances: np.ndarray = field(repr=False)  # (n,) distance to the own group's centre (nan: single)
    attached: np.ndarray = field(repr=False)  # (n,) bool: joined by the attach step, not the core graph
    edges: int = 0  # pairs under the core distance joined in the core graph (the round over every face)

    @property
    def groups(self) -> list[int]:
        """Group labels, largest group first (ties: smaller label first)."""
        counts = Counter(int(v) for v in self.labels if v != SINGLE)
        return sorted(counts, key=lambda g: (-counts[g], g))

    def members(self, group: int) -> np.ndarray:
        return np.flatnonzero(self.labels == group)


def close_pairs(descriptors: np.ndarray, threshold: float, *, block: int = 2048
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of rows closer than ``threshold`` (Euclidean), with their distances.

    Blocked matrix products (``|a|^2 + |b|^2 - 2 a.b``): memory stays at ``block x n`` floats and
    the cost is one BLAS product of the descriptors with themselves (about 20 s for 50,000 faces on
    two cores; see docs/benchmarks.md)."""
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    n = len(x)
    sq = (x.astype(np.float64) ** 2).sum(1).astype(np.float32)
    t2 = np.float32(threshold) ** 2
    rows, cols, dists = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        # Only the upper triangle: columns from ``start`` on.
        d2 = sq[start:stop, None] + sq[None, start:] - 2.0 * (x[start:stop] @ x[start:].T)
        i, j = np.nonzero(d2 < t2)
        keep = j + start > i + start  # i < j
        i, j = i[keep] + start, j[keep] + start
        rows.append(i)
        cols.append(j)
        dists.append(np.sqrt(np.clip(d2[i - start, j - start], 0, None)))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return (np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64),
            np.concatenate(dists).astype(np.float32))


def _neighbours(n: int, i: np.ndarray, j: np.ndarray, weights: np.ndarray | None = None
                ) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Adjacency lists (neighbours, their edges' weights or None) of the undirected graph with
    edges ``(i[k], j[k])``."""
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    w = None if weights is None else np.concatenate([weights, weights])[order]
    bounds = np.searchsorted(src, np.arange(n + 1))
    return [(dst[bounds[k]:bounds[k + 1]], None if w is None else w[bounds[k]:bounds[k + 1]]) for k in range(n)]


def _same_photo(photos: Sequence[object]) -> dict[int, list[int]]:
    """Face index -> the other faces of its photo (only for photos with several faces)."""
    by_photo: dict[object, list[int]] = {}
    for k, p in enumerate(photos):
        by_photo.setdefault(p, []).append(k)
    return {k: [m for m in ks if m != k] for ks in by_photo.values() if len(ks) > 1 for k in ks}


def chinese_whispers(n: int, i: np.ndarray, j: np.ndarray, *, weights: np.ndarray | None = None,
                     photos: Sequence[object] | None = None, seeds: np.ndarray | None = None, seed: int = 0,
                     max_passes: int = MAX_PASSES) -> np.ndarray:
    """Chinese whispers on the graph of ``n`` nodes and edges ``(i, j)``, with edge ``weights``
    (None: unit weights, as dlib's ``chinese_whispers_clustering``).

    Every node starts with its own label; in each pass, in a seeded random order, a node takes the
    label whose neighbours' edges weigh most (with unit weights: the label most of its neighbours
    hold; ties: the smallest label), never one that another face of its photo (``photos``) holds.
    ``seeds`` (>= 0) are fixed labels that never change (the groups of an earlier run); the other
    nodes start with labels above them. Stops when a pass changes nothing."""
    seeds = np.full(n, SINGLE, dtype=np.int64) if seeds is None else np.asarray(seeds, dtype=np.int64)
    fixed = seeds >= 0
    base = int(seeds.max()) + 1 if fixed.any() else 0
    labels = np.where(fixed, seeds, base + np.arange(n))
    adjacency = _neighbours(n, np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64),
                            None if weights is None else np.asarray(weights, dtype=np.float64))
    others = _same_photo(photos) if photos is not None else {}
    free = [k for k in range(n) if not fixed[k] and len(adjacency[k][0])]
    rng = random.Random(seed)
    for _ in range(max_passes):
        rng.shuffle(free)
        changed = 0
        for k in free:
            near, weight = adjacency[k]
            held, which = np.unique(labels[near], return_inverse=True)
            votes = np.bincount(which, weights=weight, minlength=len(held))
            if k in others:
                forbidden = {int(labels[m]) for m in others[k]}
                allowed = [q for q, h in enumerate(held) if int(h) not in forbidden]
                if not allowed:
                    continue
                held, votes = held[allowed], votes[allowed]
            best = int(held[int(np.argmax(votes))])  # np.unique sorts: ties go to the smallest label
            if best != labels[k]:
                labels[k] = best
                changed += 1
        if not changed:
            break
    return labels


def centres_of(descriptors: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Group label -> mean descriptor of its faces (singles excluded)."""
    x = np.asarray(descriptors, dtype=np.float64)
    return {int(g): x[labels == g].mean(0) for g in np.unique(labels) if g != SINGLE}


def _attach(x: np.ndarray, centre_labels: np.ndarray, candidates: np.ndarray, others: dict[int, list[int]],
            radius: float, labels: np.ndarray | None = None) -> np.ndarray:
    """Give each candidate face the nearest group whose centre (the mean of the faces labelled with
    it in ``centre_labels``) is within ``radius`` and that holds no other face of its photo (in
    ``labels``, default ``centre_labels``, which is updated in place); returns the faces that
    attached."""
    labels = centre_labels if labels is None else labels
    groups = sorted({int(v) for v in centre_labels if v != SINGLE})
    if not groups or not len(candidates):
        return np.zeros(0, dtype=np.int64)
    ids = np.asarray(groups, dtype=np.int64)
    centres = np.stack([x[centre_labels == g].mean(0) for g in groups])
    d = np.sqrt(np.clip(((x[candidates, None, :] - centres[None]) ** 2).sum(-1), 0, None))
    attached = []
    for row, k in enumerate(candidates):
        taken = {int(labels[m]) for m in others.get(int(k), ())}
        for col in np.argsort(d[row], kind="stable"):
            if d[row, col] >= radius:
                break
            if int(ids[col]) not in taken:
                labels[k] = ids[col]
                attached.append(int(k))
                break
    return np.asarray(attached, dtype=np.int64)


def main_faces(photos: Sequence[object], areas: Sequence[float]) -> np.ndarray:
    """Per face, whether it is its photo's main face: the largest (the first of equals)."""
    best: dict[object, int] = {}
    for k, (p, a) in enumerate(zip(photos, areas)):
        if p not in best or a > areas[best[p]]:
            best[p] = k
    main = np.zeros(len(photos), dtype=bool)
    main[list(best.values())] = True
    return main


def cluster_faces(descriptors: np.ndarray, photos: Sequence[object] | None = None,
                  params: ClusterParams | None = None, *, first: Sequence[bool] | None = None,
                  seeds: np.ndarray | None = None, seeds_attached: np.ndarray | None = None) -> Clustering:
    """Group faces into people (see the module docstring).

    ``descriptors``: (n, 128) face descriptors; ``photos``: per face, anything naming its photo
    (two faces of one photo are never grouped together); ``first``: per face, whether it is grouped
    in the first round (``group`` and ``check`` pass :func:`main_faces`; None: one round for all);
    ``seeds``: per face, the group it already belongs to (>= 0, kept whatever its size) or -1;
    ``seeds_attached``: which seeds joined their group by the attach step. Those keep their group
    but, as in the run that attached them, take no part in the core graph or in the centres faces
    attach to: so a run again with nothing new gives the same groups, and a face attached once
    never pulls a second one in after it (chaining). New groups are numbered above the seeds'."""
    params = params or ClusterParams()
    x = np.asarray(descriptors, dtype=np.float64)
    n = len(x)
    photos = list(photos) if photos is not None else list(range(n))
    seeds = np.full(n, SINGLE, dtype=np.int64) if seeds is None else np.asarray(seeds, dtype=np.int64).copy()
    if n == 0:
        return Clustering(np.zeros(0, dtype=np.int64), {}, np.zeros(0), np.zeros(0, dtype=bool))
    was_attached = (np.zeros(n, dtype=bool) if seeds_attached is None
                    else np.asarray(seeds_attached, dtype=bool) & (seeds >= 0))
    base = int(seeds.max()) + 1 if (seeds >= 0).any() else 0
    if first is not None and np.any(first) and not np.all(first):
        # The first round on its own: the other faces cannot pull its faces together or away.
        idx = np.flatnonzero(np.asarray(first, dtype=bool))
        ahead = _grow(x[idx], [photos[k] for k in idx], params, seeds[idx], was_attached[idx], base)
        seeds[idx] = ahead.labels
        was_attached[idx] = ahead.attached
    return _grow(x, photos, params, seeds, was_attached, base)


def _grow(x: np.ndarray, photos: list[object], params: ClusterParams, seeds: np.ndarray,
          was_attached: np.ndarray, base: int) -> Clustering:
    """One round of core graph, Chinese whispers and attach around fixed ``seeds``; new groups
    are numbered from ``base`` on (above every seed's group), largest first."""
    n = len(x)
    fixed = seeds >= 0
    others = _same_photo(photos)
    i, j, d = close_pairs(x, params.core_distance)
    keep = ~(was_attached[i] | was_attached[j])
    if others:  # two faces of one photo are never joined
        keep &= np.array([photos[a] != photos[b] for a, b in zip(i, j)], dtype=bool)
    i, j, d = i[keep], j[keep], d[keep]
    # Similarity as the weight; floored so that an edge always counts for something, even under a
    # core distance over 1 (valid, if of no use with dlib's descriptors).
    weights = np.maximum(1.0 - d.astype(np.float64), 1e-3) if params.weighted else None
    raw = chinese_whispers(n, i, j, weights=weights, photos=photos, seeds=seeds, seed=params.seed)
    # Keep the seeded groups whatever their size, and new core groups of min_size faces or more.
    sizes = Counter(int(v) for v in raw)
    seeded = {int(v) for v in seeds[fixed]}
    labels = np.array([v if (v in seeded or sizes[int(v)] >= params.min_size) else SINGLE for v in raw],
                      dtype=np.int64)
    # Renumber the new groups after the seeded ones, largest first, so labels are small and stable.
    base = max([base, *(g + 1 for g in seeded)])
    new = sorted({int(v) for v in labels if v != SINGLE and v not in seeded},
                 key=lambda g: (-sizes[g], g))
    mapping = {g: base + r for r, g in enumerate(new)}
    labels = np.array([mapping.get(int(v), int(v)) for v in labels], dtype=np.int64)
    leftovers = np.flatnonzero((labels == SINGLE) & ~fixed)
    attached = was_attached.copy()
    core = np.where(was_attached, SINGLE, labels)  # the faces the attach step measures centres on
    attached[_attach(x, core, leftovers, others, params.attach_distance, labels)] = True
    centres = centres_of(x, labels)
    distances = np.full(n, np.nan)
    for g, c in centres.items():
        members = labels == g
        distances[members] = np.linalg.norm(x[members] - c, axis=1)
    return Clustering(labels, centres, distances, attached, int(len(i)))


def split_group(descriptors: np.ndarray, photos: Sequence[object] | None = None,
                params: ClusterParams | None = None) -> tuple[np.ndarray, float | None]:
    """Re-cluster one group's faces tighter: the core distance is lowered by :data:`SPLIT_STEP`
    until the faces form two core groups or more. Returns labels 0, 1, ... (0 the largest part)
    with every face in a part (a face outside the core parts joins the nearest part's centre,
    whatever the distance: it was in the group), and the core distance that split it (None, and
    all labels 0, when no distance down to 0.2 does)."""
    params = params or ClusterParams()
    x = np.asarray(descriptors, dtype=np.float64)
    n = len(x)
    photos = list(photos) if photos is not None else list(range(n))
    core = params.core_distance - SPLIT_STEP
    while core >= 0.2 - 1e-9:
        loose = replace(params, core_distance=core, attach_distance=0.0)
        result = cluster_faces(x, photos, loose)
        if len(result.groups) >= 2:
            labels = result.labels.copy()
            rest = np.flatnonzero(labels == SINGLE)
            _attach(x, labels.copy(), rest, _same_photo(photos), np.inf, labels)
            # Faces no part can take (another face of their photo is in every part) stay apart.
            order = {g: r for r, g in enumerate(Clustering(labels, {}, np.zeros(n), np.zeros(n, bool)).groups)}
            return np.array([order.get(int(v), SINGLE) for v in labels], dtype=np.int64), round(core, 4)
        core -= SPLIT_STEP
    return np.zeros(n, dtype=np.int64), None


def bcubed(labels: Sequence[int], truth: Sequence[object]) -> tuple[float, float]:
    """BCubed precision and recall (Bagga & Baldwin 1998; Amigó et al. 2009) of a clustering
    against the true identities. Each :data:`SINGLE` face counts as a cluster of its own: a face
    left alone is never wrong, but it misses every other photo of its person."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return 1.0, 1.0
    own = np.where(labels == SINGLE, -2 - np.arange(n), labels)  # each single its own cluster
    _, cluster = np.unique(own, return_inverse=True)
    _, person = np.unique(np.asarray([str(t) for t in truth]), return_inverse=True)
    both = Counter(zip(cluster.tolist(), person.tolist()))
    size_c = Counter(cluster.tolist())
    size_p = Counter(person.tolist())
    precision = sum(m * m / size_c[c] for (c, _), m in both.items()) / n
    recall = sum(m * m / size_p[p] for (_, p), m in both.items()) / n
    return float(precision), float(recall)
