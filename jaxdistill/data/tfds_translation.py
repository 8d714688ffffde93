"""Translation pairs from TensorFlow Datasets (wmt14_translate/de-en, ...)."""

import re
from typing import Optional

from jaxdistill.errors import DataError


def _text(value) -> str:
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _languages(builder) -> list[str]:
    """Language codes in a TFDS translation dataset's features."""
    features = builder.info.features
    languages = getattr(features, 'languages', None)
    if languages:
        return list(languages)
    return list(features.keys()) if hasattr(features, 'keys') else []


def load_tfds_translation(
    name: str,
    split: str,
    source_lang: str,
    target_lang: str,
    data_dir: Optional[str] = None,
    max_examples: Optional[int] = None,
    download: bool = True,
) -> list[tuple[str, str]]:
    """(source, target) string pairs of a TFDS translation dataset split.

    Uses `tfds.load(name, split=split, data_dir=data_dir)`, which downloads and
    prepares the dataset on first use (WMT needs the network and hours).

    Args:
      name: TFDS name with config, e.g. 'wmt14_translate/de-en'.
      split: TFDS split string, e.g. 'train', 'validation', 'test[:100]'.
      source_lang, target_lang: keys of the dataset's translation features.
      max_examples: keep only the first this many (None or 0: all).
      download: False: a dataset not prepared in `data_dir` is an error at
        once, rather than TFDS's attempt to download it (which, offline,
        retries for minutes before it fails).
    Raises:
      DataError: unknown dataset or split, or a language not in the features.
    """
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError, bad config names, ...
        raise DataError(f'TFDS dataset {name!r} cannot be opened: {e}') from None
    languages = _languages(builder)
    for role, lang in (('source', source_lang), ('target', target_lang)):
        if lang not in languages:
            raise DataError(
                f'TFDS dataset {name!r} has no {role} language {lang!r}; '
                f'its languages are {sorted(languages)}'
            )
    known = _known_splits(builder)
    for part in re.split(r'\s*\+\s*', split):
        base = part.split('[', 1)[0].strip()
        if known is not None and base not in known:
            # Checked before tfds.load: TFDS would first prepare the whole
            # dataset (hours for WMT), then refuse the split.
            raise DataError(
                f'TFDS dataset {name!r} has no split {base!r}; its splits are '
                f'{sorted(known)}'
            )
    if max_examples:
        split = f'{split}[:{int(max_examples)}]' if '[' not in split else split
    if not download and not _is_prepared(builder):
        raise DataError(
            f'TFDS dataset {name!r} is not prepared in {builder.data_dir}, and '
            f'data.tfds_download=False. {_prepare_hint(name, data_dir)}'
        )
    try:
        ds = tfds.load(name, split=split, data_dir=data_dir)
    except Exception as e:  # Unknown split, download failure, ...
        prepared = _is_prepared(builder)
        hint = (
            ''
            if prepared or isinstance(e, ImportError)
            else f' It is not prepared in {builder.data_dir}, so TFDS tried to '
            'download and prepare it there (data.tfds_download=False fails at '
            f'once instead). {_prepare_hint(name, data_dir)}'
        )
        raise DataError(
            f'TFDS dataset {name!r} split {split!r} cannot be loaded: {e}.{hint}'
        ) from None
    pairs = []
    for example in tfds.as_numpy(ds):
        pairs.append((_text(example[source_lang]), _text(example[target_lang])))
        if max_examples and len(pairs) >= max_examples:
            break
    return pairs


def _prepare_hint(name: str, data_dir: Optional[str]) -> str:
    folder = repr(data_dir or None)
    return (
        'Prepare it on a machine with network access (python -c "import '
        f'tensorflow_datasets as tfds; tfds.builder({name!r}, data_dir={folder})'
        '.download_and_prepare()"; WMT takes hours and tens of GB) and set '
        'data.tfds_data_dir to that folder or a copy of it.'
    )


def _known_splits(builder) -> set[str] | None:
    """Split names of a builder: those prepared, else those its code makes
    (WMT builders list them as `subsets`); None when neither says."""
    try:
        if _is_prepared(builder) and builder.info.splits:
            return {str(k) for k in builder.info.splits.keys()}
        subsets = getattr(builder, 'subsets', None)
        return {str(k) for k in subsets} if subsets else None
    except Exception:  # pylint: disable=broad-except
        return None


def _is_prepared(builder) -> bool:
    """Whether the builder's version folder holds a prepared dataset."""
    try:
        return (builder.data_path / 'dataset_info.json').exists()
    except Exception:  # pylint: disable=broad-except
        return False
