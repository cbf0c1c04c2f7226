"""Tiny datasets on disk in the real published layouts (CelebA, Face2Text over LFW, a folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from t2f.data.celeba import ATTRIBUTE_NAMES


def face_image(seed: int, width: int, height: int) -> Image.Image:
    """A smooth, left-right asymmetric picture (so crops and flips can be told apart)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    img = np.stack([base[0] + 50 * x / width, base[1] + 40 * y / height, base[2] + 30 * np.sin(x / 9)], -1)
    img[height // 3: height // 2, width // 8: width // 3] = rng.uniform(0, 255, 3)  # a patch on the left
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


CELEBA_PARTITION = [0] * 24 + [1] * 8 + [2] * 4  # 36 images: 24 train, 8 val, 4 test


def make_celeba(root: Path, partition: list[int] = CELEBA_PARTITION, seed: int = 0) -> dict:
    """``root`` in the official aligned layout; returns the names and 0/1 attributes written."""
    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, len(partition) + 1)]
    attrs = (rng.random((len(names), len(ATTRIBUTE_NAMES))) < 0.3).astype(np.int64)
    attrs[:, ATTRIBUTE_NAMES.index("Male")] = np.arange(len(names)) % 2
    for i, name in enumerate(names):
        face_image(seed * 1000 + i, 178, 218).save(root / "img_align_celeba" / name, quality=95)
    lines = [str(len(names)), " ".join(ATTRIBUTE_NAMES) + " "]
    for name, row in zip(names, attrs):
        # like the release: values right-aligned in runs of spaces; plus some irregular extra spaces
        values = "".join(f"{(1 if v else -1):>{3 if rng.random() < 0.8 else 4}d}" for v in row)
        lines.append(name + " " + values)
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, partition)))
    return {"names": names, "attributes": attrs, "partition": np.array(partition)}


def make_face2text(root: Path, seed: int = 0) -> dict:
    """LFW folders of .jpg images and a clean.json naming .bmp files; 14 described images
    (two of one person), one described image missing on disk, one empty and one
    whitespace-only description."""
    people = [f"Person_{chr(65 + k)}" for k in range(13)]
    entries, described = [], {}
    img_id = 0
    for k, person in enumerate(people):
        for n in range(1, 3 if k == 0 else 2):
            name = f"{person}/{person}_{n:04d}"
            (root / "lfw" / person).mkdir(parents=True, exist_ok=True)
            face_image(seed * 100 + img_id, 250, 250).save(root / "lfw" / f"{name}.jpg", quality=95)
            texts = [f"A {'smiling ' if k % 2 else ''}person with {['short', 'long', 'curly'][k % 3]} hair.",
                     f"The face of number {k} has {['brown', 'blue'][n % 2]} eyes and a {['round', 'long'][k % 2]} chin."]
            described[f"{name}.jpg"] = texts
            entries.append({"img_id": img_id, "image": f"{name}.bmp",
                            "descriptions": [{"desc_id": 2 * img_id + j, "text": t} for j, t in enumerate(texts)]})
            img_id += 1
    entries[3]["descriptions"].append({"desc_id": 999, "text": ""})
    entries[4]["descriptions"].append({"desc_id": 998, "text": "   \n "})
    entries.append({"img_id": 500, "image": "Nobody_Here/Nobody_Here_0001.bmp",
                    "descriptions": [{"desc_id": 1000, "text": "A face that is not on disk."}]})
    (root / "clean.json").write_text(json.dumps(entries, indent=1))
    raw = [dict(e, descriptions=e["descriptions"][:1]) for e in entries]
    (root / "raw.json").write_text(json.dumps(raw))
    return {"described": described, "entries": entries}


FOLDER_GOOD = ["a/img0.jpg", "a/img1.JPEG", "b/c/img2.png", "b/img3.bmp", "img4.webp",
               *[f"d/face{i:02d}.jpg" for i in range(15)]]


def make_folder(root: Path, corrupt: bool = True, seed: int = 0) -> dict:
    """Images of mixed extensions and sizes in nested folders, a non-image, a hidden folder,
    and (with ``corrupt``) one garbage and one truncated JPEG."""
    for i, rel in enumerate(FOLDER_GOOD):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image = face_image(seed * 100 + i, 60 + 7 * (i % 4), 64 + 5 * (i % 3))
        if rel.endswith(".png") and i == 2:
            image = image.convert("P")  # palette image: converted to RGB
        image.save(path, format={"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP",
                                 "webp": "WEBP"}[rel.rsplit(".", 1)[1].lower()])
    (root / "notes.txt").write_text("not an image")
    (root / ".thumbs").mkdir()
    face_image(99, 32, 32).save(root / ".thumbs" / "hidden.jpg")
    bad = []
    if corrupt:
        (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
        face_image(98, 120, 120).save(root / "e_truncated.jpg", quality=95)
        data = (root / "e_truncated.jpg").read_bytes()
        (root / "e_truncated.jpg").write_bytes(data[: len(data) // 2])
        bad = ["broken.jpg", "e_truncated.jpg"]
    return {"good": sorted(FOLDER_GOOD), "bad": bad}
