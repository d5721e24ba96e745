"""Grad-CAM (inference/explain.py): a model that really learned to look at one quadrant is shown
looking there; every architecture of the registry gets a heat map; the overlay is a real PNG of
the photo's size; a face model's face decision is explained by its box."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from image_classifier.inference.kinds import open_classifier
from image_classifier.inference.explain import (
    FACE, GRAD_CAM, OVERLAY_MAX_SIDE, conv_stage, explain, grad_cam, heat_on_photo, jet, overlay_box,
)
from image_classifier.models.registry import build_model, list_archs
from image_classifier.preprocessing import Preprocessing
from image_classifier.saved_model import save_model

SIZE = 48
CLASSES = ["top_left", "other"]
HALF = SIZE // 2
SQUARE = 12


def quadrant_image(rng: np.random.Generator, top_left: bool) -> Image.Image:
    """Grey noise; a bright square inside the top-left quadrant when ``top_left``; and, in both
    classes, bright squares as distractors in each other quadrant with probability 1/2 (so the
    top-left quadrant is the only place that tells the classes apart)."""
    arr = rng.normal(90, 20, (SIZE, SIZE, 3))
    for quadrant in range(4):
        if (quadrant == 0 and not top_left) or (quadrant > 0 and rng.random() < 0.5):
            continue
        qy, qx = divmod(quadrant, 2)
        y = qy * HALF + int(rng.integers(0, HALF - SQUARE + 1))
        x = qx * HALF + int(rng.integers(0, HALF - SQUARE + 1))
        arr[y:y + SQUARE, x:x + SQUARE] = rng.normal(235, 10, (SQUARE, SQUARE, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def quadrant_set(seed: int, n: int) -> tuple[list[Image.Image], list[int]]:
    """Half the images class 0 (a square top-left), half class 1 (none there)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        label = i % 2
        images.append(quadrant_image(rng, top_left=label == 0))
        labels.append(label)
    return images, labels


@pytest.fixture(scope="module")
def quadrant_model(tmp_path_factory):
    """alexnet_like at 48 px, trained here until it tells a top-left square from one elsewhere."""
    torch.manual_seed(0)
    net, options = build_model("alexnet_like", len(CLASSES), options={"input_size": SIZE})
    pre = Preprocessing(SIZE)
    images, labels = quadrant_set(0, 256)
    x, y = pre(images), torch.tensor(labels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(80):  # converged by ~50 steps
        idx = torch.randint(0, len(y), (32,))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    card = {"architecture": "alexnet_like", "arch_options": options, "classes": CLASSES,
            "preprocessing": pre.to_dict()}
    return save_model(net, card, tmp_path_factory.mktemp("quadrant") / "model")


def test_grad_cam_lights_the_quadrant_the_label_depends_on(quadrant_model):
    clf = open_classifier(quadrant_model)
    images, labels = quadrant_set(1, 40)  # held out: other seed
    predicted = clf.predict(images)
    accuracy = np.mean([p == CLASSES[y] for p, y in zip(predicted, labels)])
    assert accuracy >= 0.9, accuracy  # the model really learned the rule
    inside, outside, hottest, n = [], [], 0, 0
    for image, label in zip(images, labels):
        if label != 0:
            continue
        heat = explain(clf, image, target="top_left").heatmap
        assert heat.shape == (SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1
        quadrants = [heat[:HALF, :HALF].mean(), heat[:HALF, HALF:].mean(), heat[HALF:, :HALF].mean(),
                     heat[HALF:, HALF:].mean()]
        inside.append(quadrants[0])
        outside.append(np.mean(quadrants[1:]))
        hottest += int(np.argmax(quadrants) == 0)
        n += 1
    # The top-left quadrant holds clearly more of the heat than the others (which hold bright
    # distractor squares too), on average and as the hottest quadrant of most images (chance: 1/4).
    assert np.mean(inside) > 2 * np.mean(outside), (np.mean(inside), np.mean(outside))
    assert hottest >= n / 2, (hottest, n)


def test_overlay_png_decodes_at_the_photos_size(quadrant_model, tmp_path):
    clf = open_classifier(quadrant_model)
    rng = np.random.default_rng(3)
    photo = quadrant_image(rng, True).resize((150, 100))
    path = tmp_path / "photo.png"
    photo.save(path)
    ex = explain(clf, path)  # default target: the model's own answer
    assert ex.method == GRAD_CAM and ex.target == clf.predict([path])[0] and ex.layer == "backbone.6"
    api = ex.to_api()
    assert set(api) == {"method", "png_base64", "target", "layer"}
    with Image.open(io.BytesIO(base64.b64decode(api["png_base64"]))) as im:
        assert im.format == "PNG" and im.size == (150, 100)
        drawn = np.asarray(im.convert("RGB"), dtype=np.float32)
    # The overlay is the photo mixed with the colour map: it differs from the photo, and the
    # photo is still in it (half of each pixel).
    original = np.asarray(photo, dtype=np.float32)
    assert np.abs(drawn - original).mean() > 10
    assert np.corrcoef(drawn.mean(2).ravel(), original.mean(2).ravel())[0, 1] > 0.3
    # A big photo's overlay is bounded, its aspect kept.
    big = photo.resize((1600, 1200))
    ex = explain(clf, big)
    assert ex.overlay.size == (OVERLAY_MAX_SIDE, 384)


#: The registry's own architectures, named: other test modules register tiny test-only ones, and
#: which of those ``list_archs()`` holds at collection depends on the order files are collected in.
BUILTIN_ARCHS = ("simple_cnn", "alexnet_like", "mobilenet_v2", "resnet50", "face_embedding")


def test_the_builtin_architectures_are_registered():
    assert set(BUILTIN_ARCHS) <= set(list_archs())


@pytest.mark.parametrize("arch", BUILTIN_ARCHS)
def test_every_architecture_gets_a_heat_map_of_the_input_size(arch):
    torch.manual_seed(0)
    net, _ = build_model(arch, 3, options={"input_size": 40})  # random init: shapes only
    net.eval()
    size = 40 if arch in ("simple_cnn", "alexnet_like") else 64  # ImageNet backbones: >= 32 px
    g = grad_cam(net, torch.randn(1, 3, size, size), target=1)
    assert g.heatmap.shape == (size, size) and g.heatmap.dtype == np.float32
    assert 0 <= g.heatmap.min() and g.heatmap.max() <= 1 and g.target == 1
    stage = conv_stage(net)
    assert g.layer == stage.layer
    block = dict(net.named_modules())[stage.layer]
    assert any(isinstance(m, torch.nn.Conv2d) for m in block.modules())
    # Nothing after the stage holds a convolution: it is the last one.
    assert not any(isinstance(m, torch.nn.Conv2d) for b in net.backbone[stage.end:] for m in b.modules())


def test_grad_cam_under_inference_mode_and_bad_targets():
    net, _ = build_model("simple_cnn", 2, options={"input_size": 16})
    net.eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():  # a caller's inference mode must not break the backward pass
        g = grad_cam(net, x, target=0)
    assert g.heatmap.shape == (16, 16)
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(net, x, target=5)
    with pytest.raises(ValueError, match="one image"):
        grad_cam(net, torch.randn(2, 3, 16, 16))


def test_center_crop_heat_lies_in_the_centre_square_only():
    heat = np.ones((8, 8), dtype=np.float32)
    on_photo = heat_on_photo(heat, (30, 20), Preprocessing(8, resize_mode="center_crop"))
    assert on_photo.shape == (20, 30)
    assert on_photo[:, 5:25].min() == pytest.approx(1) and on_photo[:, :5].max() == 0 and on_photo[:, 25:].max() == 0
    squash = heat_on_photo(heat, (30, 20), Preprocessing(8))
    assert squash.min() == pytest.approx(1)


def test_jet_runs_from_blue_to_red():
    cold, hot = jet(np.array([0.0, 1.0]))
    assert cold[2] > 100 and cold[0] == 0 and hot[0] > 100 and hot[2] == 0


def test_face_box_overlay_keeps_the_box_bright_and_dims_the_rest():
    photo = Image.new("RGB", (200, 100), (200, 200, 200))
    out = np.asarray(overlay_box(photo, [100, 20, 160, 80], (400, 200)), dtype=np.float32)  # box in 2x pixels
    assert out[25, 60].tolist() == [200, 200, 200]  # inside the box (scaled to 50..80, 10..40)
    assert out[5, 5].max() < 100  # dimmed outside
    assert tuple(out[10, 65]) == (255, 215, 0)  # the outline


def test_face_decision_is_explained_by_its_box(tmp_path):
    """A face_embedding model whose head answers for a real face: the explanation is the box."""
    from conftest import ATHLETES, MOBILENET

    if not (ATHLETES.is_dir() and MOBILENET.is_file()):
        pytest.skip("needs ../shared (athletes photos and MobileNetV2 weights)")
    pytest.importorskip("dlib")
    from image_classifier.faces import analyse_bytes
    from image_classifier.models.face_embedding import FaceHead

    photo = ATHLETES / "Kobe Bryant" / "kobe_(103).jpg"  # one frontal face
    descriptor = analyse_bytes(photo.read_bytes(), str(photo)).descriptors[0]
    net, options = build_model("face_embedding", 2, options={"face_bank_size": 1})
    # A head that knows this face (its bank holds it) and calls it class 1.
    FaceHead(np.array([np.zeros(128), np.ones(128)]), np.zeros(2), np.zeros(128), np.ones(128),
             descriptor[None].astype(np.float64), 0.6).write_to(net)
    pre = Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    from image_classifier.faces import weights_sha256

    card = {"architecture": "face_embedding", "arch_options": options, "classes": ["a", "b"],
            "preprocessing": pre.to_dict(), "faces": {"weights_sha256": weights_sha256()}}
    clf = open_classifier(save_model(net, card, tmp_path / "face"))
    _, details = clf.predict_details([photo])
    assert details[0]["face"] is not None
    ex = explain(clf, photo)
    assert ex.method == FACE and ex.box == details[0]["face"] and ex.heatmap is None
    api = ex.to_api()
    assert api["text"] == "decided by the face in this box" and api["image_size"] == details[0]["image_size"]
    with Image.open(io.BytesIO(base64.b64decode(api["png_base64"]))) as im:
        w, h = details[0]["image_size"]
        assert abs(im.width / im.height - w / h) < 0.02
    # No face (a texture): the fallback network decides, and Grad-CAM explains it.
    texture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    ex = explain(clf, texture)
    assert ex.method == GRAD_CAM and ex.layer == "backbone.18" and ex.overlay.size == (160, 120)
