"""Image classification data: MNIST (IDX) and CIFAR-10 (JPEG tar) as numpy.

Files are decoded once into uint8 arrays and cached as .npy in a cache folder
(never in the repository); later runs load the cache. Training batches come
from `ImageBatcher`: the order and the augmentation (random crop with zero
padding, horizontal flip) are pure functions of (seed, epoch, index), so a
resumed run sees exactly the batches an uninterrupted one would.
"""

import gzip
import hashlib
import io
import os
import pathlib
import tarfile

import numpy as np

from jaxdistill.data import batching
from jaxdistill.errors import DataError

MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
CIFAR10_TAR = 'cifar10_jpg.tar.gz'
CIFAR10_CLASSES = (
    'airplane', 'automobile', 'bird', 'cat', 'deer',
    'dog', 'frog', 'horse', 'ship', 'truck',
)  # fmt: skip
DATASETS = ('mnist', 'cifar10')
NUM_CLASSES = {'mnist': 10, 'cifar10': 10}


def read_idx(path) -> np.ndarray:
    """Reads an IDX file (gzip or raw) of unsigned bytes -> uint8 array.

    Raises:
      DataError: missing file, wrong magic number, non-ubyte data or a size
        that does not match the header.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f'IDX file {path} does not exist.')
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rb') as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f'{path}: cannot read ({e}).') from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f'{path}: not an IDX file (bad magic number {raw[:4]!r}).')
    if raw[2] != 0x08:
        raise DataError(
            f'{path}: IDX data type 0x{raw[2]:02x} is not unsigned byte (0x08).'
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise DataError(f'{path}: truncated IDX header.')
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim)
    )
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(
            f'{path}: header says shape {shape} ({int(np.prod(shape))} bytes) but '
            f'the file holds {len(raw) - header} data bytes.'
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _idx_file(data_dir, name: str) -> pathlib.Path:
    """`data_dir/name` (gzipped), or the same name without `.gz` if only
    that exists; a DataError naming both (and the four names MNIST needs)
    if neither does."""
    packed = pathlib.Path(data_dir) / name
    raw = packed.with_suffix('')
    for path in (packed, raw):
        if path.is_file():
            return path
    names = ', '.join(n for pair in MNIST_FILES.values() for n in pair)
    raise DataError(
        f'IDX file {packed} (or {raw.name}) does not exist; an MNIST folder '
        f'holds {names} (gzipped or not).'
    )


def load_mnist(data_dir, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST split 'train' | 'test' -> (images uint8 [N, 28, 28, 1], labels int32 [N])."""
    if split not in MNIST_FILES:
        raise DataError(f"MNIST split {split!r} unknown; use 'train' or 'test'.")
    image_file, label_file = (_idx_file(data_dir, f) for f in MNIST_FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f'{image_file} {images.shape} and {label_file} {labels.shape} do '
            'not form N images and N labels.'
        )
    bad = np.flatnonzero(labels >= NUM_CLASSES['mnist'])  # uint8: never < 0.
    if bad.size:
        raise DataError(
            f'{label_file}: {bad.size} labels outside 0..{NUM_CLASSES["mnist"] - 1}; '
            f'the first is {labels[bad[0]]} at index {bad[0]}.'
        )
    return images[..., None], labels.astype(np.int32)


_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


def iter_cifar10_tar(path):
    """Yields (member name, image uint8 [32, 32, 3], label int) in archive order.

    Members are `{train,test}/<class>/NNNN.jpg` (or .jpeg / .png, in any
    case); labels index CIFAR10_CLASSES (alphabetical, the standard CIFAR-10
    order). A README at the top level is skipped; any other file (another
    top-level file, a split other than train/test) is a DataError naming
    it, so that no image is dropped unsaid.
    """
    from PIL import Image  # pylint: disable=g-import-not-at-top

    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f'CIFAR-10 archive {path} does not exist.')
    try:
        with tarfile.open(path, 'r:gz') as tar:
            for member in tar:
                name = member.name.removeprefix('./')
                parts = name.split('/')
                if not member.isfile():
                    continue  # Folders.
                if len(parts) == 1 and name.lower().startswith('readme'):
                    continue
                image = name.lower().endswith(_IMAGE_SUFFIXES)
                if (
                    not image
                    or len(parts) != 3
                    or parts[0] not in ('train', 'test')
                    or parts[1] not in CIFAR10_CLASSES
                ):
                    raise DataError(
                        f'{path}: unexpected member {member.name!r}; expected '
                        'train/CLASS/NAME.jpg or test/CLASS/NAME.jpg (.jpeg, .png) '
                        'with a CIFAR-10 class, or a top-level README.'
                    )
                data = tar.extractfile(member).read()
                try:
                    with Image.open(io.BytesIO(data)) as im:
                        pixels = np.asarray(im.convert('RGB'), np.uint8)
                except (OSError, SyntaxError, ValueError) as e:
                    # PIL's errors for a damaged image: name the image, not
                    # the archive, which is fine.
                    raise DataError(
                        f'{path}:{member.name} is not a readable JPEG ({e}).'
                    ) from e
                if pixels.shape != (32, 32, 3):
                    raise DataError(
                        f'{path}:{member.name} is {pixels.shape}, not 32x32 RGB.'
                    )
                yield name, pixels, CIFAR10_CLASSES.index(parts[1])
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f'{path}: cannot read the archive ({e}).') from e


def decode_cifar10_tar(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The whole archive -> {'train' | 'test': (images uint8 [N, 32, 32, 3], labels int32 [N])}.

    Each split is sorted by member name.
    """
    found = {name: (pixels, label) for name, pixels, label in iter_cifar10_tar(path)}
    out = {}
    for split in ('train', 'test'):
        names = sorted(n for n in found if n.startswith(split + '/'))
        if not names:
            raise DataError(f'{path} holds no {split}/ images.')
        out[split] = (
            np.stack([found[n][0] for n in names]),
            np.asarray([found[n][1] for n in names], np.int32),
        )
    return out


def _cache_key(path: pathlib.Path) -> str:
    st = path.stat()
    return hashlib.sha1(
        f'{path.resolve()}|{st.st_size}|{st.st_mtime_ns}'.encode()
    ).hexdigest()[:12]


def load_cifar10(data_dir, split: str, cache_dir) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 split -> (images uint8 [N, 32, 32, 3], labels int32 [N]), cached.

    The first call decodes the whole archive (both splits) and writes
    `cifar10_{split}_{key}_{images,labels}.npy` under `cache_dir`; the key
    changes when the archive does.
    """
    if split not in ('train', 'test'):
        raise DataError(f"CIFAR-10 split {split!r} unknown; use 'train' or 'test'.")
    tar_path = pathlib.Path(data_dir) / CIFAR10_TAR
    if not tar_path.is_file():
        raise DataError(f'CIFAR-10 archive {tar_path} does not exist.')
    cache = pathlib.Path(cache_dir)
    key = _cache_key(tar_path)
    stem = lambda s: cache / f'cifar10_{s}_{key}'
    if not pathlib.Path(f'{stem(split)}_labels.npy').is_file():
        cache.mkdir(parents=True, exist_ok=True)
        for s, (images, labels) in decode_cifar10_tar(tar_path).items():
            for name, array in (('images', images), ('labels', labels)):
                tmp = f'{stem(s)}_{name}.{os.getpid()}.tmp.npy'
                np.save(tmp, array)
                os.replace(tmp, f'{stem(s)}_{name}.npy')
    return np.load(f'{stem(split)}_images.npy'), np.load(f'{stem(split)}_labels.npy')


def load_images(
    dataset: str, data_dir, split: str, cache_dir
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W, C], labels int32 [N]) of 'mnist' or 'cifar10'."""
    if dataset == 'mnist':
        return load_mnist(data_dir, split)
    if dataset == 'cifar10':
        return load_cifar10(data_dir, split, cache_dir)
    raise DataError(f'image dataset {dataset!r} unknown; known: {", ".join(DATASETS)}.')


def crop_flip(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    pad: int = 4,
    flip: bool = True,
    rows: slice = slice(None),
    batch: int = 0,
):
    """Random crop from the zero-padded image, and a random horizontal flip.

    Args:
      images: uint8 [B, H, W, C], or only rows `rows` of such a batch.
      rng: numpy Generator; draws offsets [B, 2] then flips [B].
      pad: zero padding on each side; the crop keeps the size H × W.
      flip: mirror left-right with probability 1/2.
      rows, batch: `images` holds rows `rows` of a batch of `batch` rows
        (0: images is the whole batch). The draws are the whole batch's, so
        a part of a batch is cropped as those rows of the whole batch are.
    Returns:
      uint8 [len(images), H, W, C] (one fancy-indexing gather, no Python loop).
    """
    n, h, w, _ = images.shape
    b = batch or n
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = rng.integers(0, 2 * pad + 1, size=(b, 2))[rows]
    top = offsets[:, :1] + np.arange(h)
    cols = offsets[:, 1:] + np.arange(w)
    if flip:
        mirror = (rng.random(b) < 0.5)[rows]
        cols = np.where(mirror[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], top[:, :, None], cols[:, None, :]]


AUGMENTATIONS = ('crop_flip', 'crop', 'none')  # data.augment


class ImageBatcher(batching.EpochCursor):
    """Shuffled epochs of {'image' uint8 [B, H, W, C], 'label' int32 [B]}.

    Each epoch is a permutation drawn from (seed, epoch); the incomplete last
    batch is dropped. Augmentation ('crop_flip', 'crop' or 'none') draws from
    (seed, epoch, index).
    """

    def __init__(
        self,
        images,
        labels,
        *,
        batch_size: int,
        seed: int,
        augment: str = 'none',
        pad: int = 4,
        key: str = 'image',
    ):
        if augment not in AUGMENTATIONS:
            raise DataError(
                f"augment {augment!r} unknown; use 'crop_flip', 'crop' or 'none'."
            )
        if len(images) != len(labels):
            raise DataError(f'{len(images)} images but {len(labels)} labels.')
        if batch_size < 1 or len(images) < batch_size:
            raise DataError(
                f'batch_size {batch_size} must be in 1..{len(images)} (the number of images).'
            )
        self._images, self._labels = images, labels
        self._batch, self._seed, self._augment, self._pad = (
            batch_size,
            int(seed),
            augment,
            pad,
        )
        self._num_batches = len(images) // batch_size
        self._key = key
        self._perm = (None, None)

    def batches_per_epoch(self) -> int:
        return self._num_batches

    def padding_fraction(self) -> float:
        return 0.0

    def batch_at(self, epoch: int, index: int, part=None) -> dict:
        """Batch `index` of `epoch` (both >= 0, index < batches_per_epoch()),
        or only the rows `batching.part_rows(B, part)` of it."""
        if epoch < 0 or not 0 <= index < self._num_batches:
            raise DataError(
                f'batch ({epoch}, {index}) does not exist: epochs have {self._num_batches} batches.'
            )
        if self._perm[0] != epoch:
            order = np.random.default_rng([self._seed, epoch]).permutation(
                len(self._labels)
            )
            self._perm = (epoch, order)
        rows = np.sort(self._perm[1][index * self._batch : (index + 1) * self._batch])
        mine = batching.part_rows(self._batch, part)
        rows = rows[mine]
        images = self._images[rows]
        if self._augment != 'none':
            rng = np.random.default_rng([self._seed, epoch, index, 1])
            images = crop_flip(
                images,
                rng,
                pad=self._pad,
                flip=self._augment == 'crop_flip',
                rows=mine,
                batch=self._batch,
            )
        return {self._key: images, 'label': self._labels[rows].astype(np.int32)}


def eval_batches(
    images, labels, *, batch_size: int, batch_multiple: int = 1, key: str = 'image'
) -> list[dict]:
    """Fixed-order batches of `batch_size` rows (rounded up to batch_multiple).

    The last batch is filled with zero inputs labelled -1 (padding rows).
    """
    rows = -(-batch_size // batch_multiple) * batch_multiple
    out = []
    for start in range(0, len(labels), rows):
        image = np.zeros((rows, *images.shape[1:]), images.dtype)
        label = np.full((rows,), -1, np.int32)
        n = min(rows, len(labels) - start)
        image[:n], label[:n] = images[start : start + n], labels[start : start + n]
        out.append({key: image, 'label': label})
    return out


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 [N, H, W, C] pixels scaled to [0, 1].

    Over every image (sums in float64, a chunk at a time): a strided sample
    was biased on MNIST (every 6th image: mean 6% low).
    """
    total = np.zeros(images.shape[-1], np.float64)
    squares = np.zeros(images.shape[-1], np.float64)
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 1, 2))
        squares += np.square(chunk).sum(axis=(0, 1, 2))
    count = images.size // images.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)
