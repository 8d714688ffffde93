"""Image data: IDX and JPEG-tar readers, augmentation, resumable batches."""

import gzip
import io
import tarfile

import numpy as np
import pytest

from jaxdistill.data import images
from jaxdistill.errors import DataError


def _write_idx(path, array, magic=b'\x00\x00\x08'):
    header = magic + bytes([array.ndim])
    header += b''.join(int(n).to_bytes(4, 'big') for n in array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_roundtrip_and_errors(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / 'a.gz', array)
    np.testing.assert_array_equal(images.read_idx(tmp_path / 'a.gz'), array)
    _write_idx(tmp_path / 'float.gz', array, magic=b'\x00\x00\x0d')
    with pytest.raises(DataError, match='unsigned byte'):
        images.read_idx(tmp_path / 'float.gz')
    with gzip.open(tmp_path / 'short.gz', 'wb') as f:
        f.write(b'\x00\x00\x08\x01' + (10).to_bytes(4, 'big') + b'abc')
    with pytest.raises(DataError, match='3 data bytes'):
        images.read_idx(tmp_path / 'short.gz')
    with pytest.raises(DataError, match='does not exist'):
        images.read_idx(tmp_path / 'missing.gz')


def test_crop_flip_is_a_shifted_mirrored_window():
    rng = np.random.default_rng(0)
    batch = rng.integers(1, 255, (16, 8, 8, 3), dtype=np.uint8)
    same = images.crop_flip(batch, np.random.default_rng(1), pad=0, flip=False)
    np.testing.assert_array_equal(same, batch)
    out = images.crop_flip(batch, np.random.default_rng(2), pad=2)
    again = images.crop_flip(batch, np.random.default_rng(2), pad=2)
    np.testing.assert_array_equal(out, again)
    padded = np.pad(batch, ((0, 0), (2, 2), (2, 2), (0, 0)))
    flipped = 0
    for b in range(16):
        windows = [
            w
            for y in range(5)
            for x in range(5)
            for w in (
                padded[b, y : y + 8, x : x + 8],
                padded[b, y : y + 8, x : x + 8][:, ::-1],
            )
        ]
        matches = [i for i, w in enumerate(windows) if np.array_equal(w, out[b])]
        assert matches, f'row {b} is no crop of its padded image'
        flipped += matches[0] % 2
    assert 0 < flipped < 16  # Both flipped and unflipped rows occur.


def test_channel_stats_cover_every_image():
    # Every 6th image dark, the rest bright: a strided sample would see one kind.
    rng = np.random.default_rng(0)
    x = rng.integers(100, 256, size=(60_000, 2, 2, 1), dtype=np.uint8)
    x[::6] = 0
    mean, std = images.channel_stats(x)
    full = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, full.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(std, full.std(axis=(0, 1, 2)), rtol=1e-9)


def test_batcher_is_deterministic_and_resumes_exactly():
    x = np.arange(40 * 4 * 4 * 3, dtype=np.int64).reshape(40, 4, 4, 3).astype(np.uint8)
    y = np.arange(40, dtype=np.int32)
    make = lambda: images.ImageBatcher(x, y, batch_size=8, seed=3, augment='crop_flip')
    a = make()
    assert a.batches_per_epoch() == 5
    first = [next(a) for _ in range(7)]
    assert a.position == {'epoch': 1, 'index': 2}
    epoch0 = np.concatenate([b['label'] for b in first[:5]])
    assert sorted(epoch0) == list(range(40))  # Each image once per epoch.
    b = make()
    b.set_position({'epoch': 1, 'index': 0})
    for want in first[5:]:
        got = next(b)
        np.testing.assert_array_equal(got['image'], want['image'])
        np.testing.assert_array_equal(got['label'], want['label'])
    assert not np.array_equal(first[0]['label'], first[5]['label'])
    with pytest.raises(DataError, match='does not fit'):
        b.set_position({'epoch': 0, 'index': 5})
    with pytest.raises(DataError, match='augment'):
        images.ImageBatcher(x, y, batch_size=8, seed=0, augment='mixup')


def test_eval_batches_pad_with_negative_labels():
    x = np.ones((10, 2, 2, 1), np.uint8)
    batches = images.eval_batches(x, np.arange(10), batch_size=3, batch_multiple=2)
    assert [len(b['label']) for b in batches] == [4, 4, 4]
    assert list(batches[-1]['label']) == [8, 9, -1, -1]
    assert batches[-1]['image'][2:].sum() == 0


def _jpeg(color):
    from PIL import Image

    buf = io.BytesIO()
    Image.new('RGB', (32, 32), color).save(buf, format='JPEG', quality=95)
    return buf.getvalue()


def test_cifar_tar_decode_and_cache(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    with tarfile.open(data / images.CIFAR10_TAR, 'w:gz') as tar:
        for name, color in [
            ('train/ship/0001.jpg', (0, 0, 255)),
            ('train/cat/0000.jpg', (255, 0, 0)),
            ('test/truck/0000.jpg', (0, 255, 0)),
        ]:
            payload = _jpeg(color)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    x, y = images.load_cifar10(data, 'train', tmp_path / 'cache')
    assert x.shape == (2, 32, 32, 3) and list(y) == [3, 8]  # cat, ship
    assert x[0, :, :, 0].mean() > 200 and x[1, :, :, 2].mean() > 200
    assert len(list((tmp_path / 'cache').glob('*.npy'))) == 4
    x2, y2 = images.load_cifar10(data, 'test', tmp_path / 'cache')
    assert list(y2) == [9] and x2.shape == (1, 32, 32, 3)
    with pytest.raises(DataError, match='does not exist'):
        images.load_cifar10(tmp_path, 'train', tmp_path / 'cache')


def _tar(path, members):
    with tarfile.open(path, 'w:gz') as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cifar_images_in_any_case_are_read_other_files_are_named(tmp_path):
    """No image is dropped unsaid: .JPG, .jpeg and .png are read; a stray
    file inside a split is an error naming it; a top-level README is not."""
    from PIL import Image

    path = tmp_path / images.CIFAR10_TAR
    png = io.BytesIO()
    Image.new('RGB', (32, 32), (0, 255, 0)).save(png, format='PNG')
    members = [
        ('README.md', b'# CIFAR-10 as JPEG'),
        ('train/cat/0000.JPG', _jpeg((255, 0, 0))),
        ('train/cat/0001.jpeg', _jpeg((255, 0, 0))),
        ('train/dog/0000.png', png.getvalue()),
    ]
    _tar(path, members)
    labels = [label for _, _, label in images.iter_cifar10_tar(path)]
    assert labels == [3, 3, 5]  # cat, cat, dog
    # A stray file in a split, an image beside the splits or in a split
    # other than train/test (which nothing would read) are named.
    for stray in ('train/dog/notes.txt', 'stray.jpg', 'val/cat/0002.jpg'):
        _tar(path, [*members, (stray, _jpeg((0, 0, 255)))])
        with pytest.raises(DataError, match=rf"unexpected member '{stray}'"):
            list(images.iter_cifar10_tar(path))
    # Names written with a leading './' are read as the same members.
    _tar(path, [('./' + name, payload) for name, payload in members])
    assert [n for n, _, _ in images.iter_cifar10_tar(path)][0] == 'train/cat/0000.JPG'


def test_mnist_files_gzipped_or_not(tmp_path):
    image_file, label_file = images.MNIST_FILES['test']
    _write_idx(tmp_path / image_file, np.zeros((3, 28, 28), np.uint8))
    # The labels uncompressed, under the name without .gz.
    raw = tmp_path / label_file.removesuffix('.gz')
    _write_idx(tmp_path / 'labels.gz', np.array([1, 2, 3], np.uint8))
    raw.write_bytes(gzip.decompress((tmp_path / 'labels.gz').read_bytes()))
    x, y = images.load_mnist(tmp_path, 'test')
    assert x.shape == (3, 28, 28, 1) and list(y) == [1, 2, 3]
    with pytest.raises(
        DataError,
        match=r'train-images-idx3-ubyte.gz \(or train-images-idx3-ubyte\) does '
        r'not exist; an MNIST folder holds train-images-idx3-ubyte.gz, ',
    ):
        images.load_mnist(tmp_path, 'train')


def test_mnist_labels_outside_the_classes_are_named(tmp_path):
    image_file, label_file = images.MNIST_FILES['train']
    _write_idx(tmp_path / image_file, np.zeros((4, 28, 28), np.uint8))
    _write_idx(tmp_path / label_file, np.array([3, 9, 200, 10], np.uint8))
    with pytest.raises(
        DataError, match=r'2 labels outside 0..9; the first is 200 at index 2'
    ):
        images.load_mnist(tmp_path, 'train')


def test_a_damaged_jpeg_is_named_not_the_archive(tmp_path):
    path = tmp_path / images.CIFAR10_TAR
    with tarfile.open(path, 'w:gz') as tar:
        for name, payload in [
            ('train/cat/0000.jpg', _jpeg((255, 0, 0))),
            ('train/cat/0001.jpg', _jpeg((0, 0, 255))[:200]),  # Cut short.
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match='train/cat/0001.jpg is not a readable JPEG'):
        images.decode_cifar10_tar(path)


def test_real_mnist(shared_data):
    x, y = images.load_mnist(shared_data / 'mnist', 'train')
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.uint8
    assert list(y[:5]) == [5, 0, 4, 1, 9] and set(np.unique(y)) == set(range(10))
    xt, yt = images.load_mnist(shared_data / 'mnist', 'test')
    assert xt.shape == (10000, 28, 28, 1) and len(yt) == 10000


def test_real_cifar10_archive_members(shared_data):
    path = shared_data / 'cifar10' / images.CIFAR10_TAR
    seen = []
    for name, pixels, label in images.iter_cifar10_tar(path):
        assert pixels.shape == (32, 32, 3) and pixels.std() > 0
        seen.append((name.split('/')[1], label))
        if len(seen) == 20:
            break
    assert seen[0] == ('airplane', 0) and all(
        images.CIFAR10_CLASSES[lab] == cls for cls, lab in seen
    )
