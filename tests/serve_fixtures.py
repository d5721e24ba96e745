"""Real small models and real image files for the serve tests (no mocks: a trained network,
files written with Pillow)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from image_classifier.models.registry import build_model
from image_classifier.preprocessing import Preprocessing
from image_classifier.runs import model_dir_for, write_best_pointer
from image_classifier.saved_model import save_model

# One class name with HTML in it: class folders may be named anything.
HTML_CLASS = '<img src=x onerror="window.__pwned=1">red & <b>bold</b>'
CLASSES = [HTML_CLASS, "green", "blue"]
COLOURS = {HTML_CLASS: (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
INPUT_SIZE = 32


def colour_image(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb, dtype=np.float32) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def train_colour_model(out_dir: Path, seed: int = 0, steps: int = 60) -> Path:
    """An AlexNet-like network at 32 px, trained for a second to tell red, green and blue apart."""
    torch.manual_seed(seed)
    net, options = build_model("alexnet_like", len(CLASSES), options={"input_size": INPUT_SIZE})
    pre = Preprocessing(INPUT_SIZE)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(96):
        label = i % len(CLASSES)
        base = np.array(COLOURS[CLASSES[label]]) + rng.integers(-40, 40, 3)
        images.append(colour_image(tuple(int(v) for v in np.clip(base, 0, 255)), seed=i))
        labels.append(label)
    x = pre(images)
    y = torch.tensor(labels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(y), (32,))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    card = {"architecture": "alexnet_like", "arch_options": options, "classes": CLASSES,
            "preprocessing": pre.to_dict()}
    return save_model(net, card, out_dir)


def make_run(run_dir: Path, source_model: Path) -> Path:
    """A run directory as ``compare`` writes it: two models, ``best`` -> tiny_b, metrics for tiny_b only."""
    import shutil

    for name in ("tiny_a", "tiny_b"):
        shutil.copytree(source_model, model_dir_for(run_dir, name))
    write_best_pointer(run_dir, model_dir_for(run_dir, "tiny_b"))
    metrics = {
        "selection": {"best": "tiny_b", "criterion": "validation accuracy"},
        "models": [{
            "name": "tiny_b",
            "model_dir": "models/tiny_b",
            "validation": {"accuracy": 0.95, "loss": 0.2, "best_epoch": 3},
            "test": {"n": 30, "accuracy": 0.9, "accuracy_ci": [0.8, 0.97], "accuracy_ci_level": 0.95,
                     "macro_f1": 0.88},
            "speed": {"e2e_latency_ms_p50": 3.2},
        }],
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


# ---- a small JSON-schema checker for the subset of JSON Schema the OpenAPI document uses ------
# (shared by every test that checks an answer of the server against its OpenAPI document)

def _resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        node: object = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]  # type: ignore[index]
        schema = node  # type: ignore[assignment]
    return schema


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(doc: dict, schema: dict, value: object, where: str = "$") -> None:
    schema = _resolve(doc, schema)
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        ok = False
        for t in types:
            if t == "integer":
                ok |= isinstance(value, int) and not isinstance(value, bool)
            elif t == "number":
                ok |= isinstance(value, (int, float)) and not isinstance(value, bool)
            else:
                ok |= isinstance(value, _TYPES[t])
        assert ok, f"{where}: {value!r} is not of type {types}"
    if value is None:
        return
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "minimum" in schema:
        assert value >= schema["minimum"], f"{where}: {value} < {schema['minimum']}"
    if "maximum" in schema:
        assert value <= schema["maximum"], f"{where}: {value} > {schema['maximum']}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key!r}"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                validate(doc, props[key], item, f"{where}.{key}")
            elif extra is False:
                raise AssertionError(f"{where}: unexpected property {key!r}")
            elif isinstance(extra, dict):
                validate(doc, extra, item, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(doc, schema["items"], item, f"{where}[{i}]")


def check_response(doc: dict, path: str, method: str, status: int, body: object) -> None:
    operation = doc["paths"][path][method]
    assert str(status) in operation["responses"], f"{method.upper()} {path} answered {status}, not documented"
    content = operation["responses"][str(status)].get("content", {})
    schema = content["application/json"]["schema"]
    assert body is not None, f"{method.upper()} {path} {status}: body is not JSON"
    validate(doc, schema, body)
