"""Translation corpora from a `config.data` block, and their encoding to ids."""

import dataclasses
import os
import zlib

import numpy as np

from jaxdistill.data import synthetic
from jaxdistill.data import text as text_lib
from jaxdistill.data import tokenizer as tokenizer_lib
from jaxdistill.errors import ConfigError, DataError

SOURCES = ('synthetic', 'files', 'tfds')
TOO_LONG = ('filter', 'truncate')


@dataclasses.dataclass(frozen=True)
class TranslationData:
    """Parallel sentences; target_lang[i] is the language of target[i]."""

    source: list[str]
    target: list[str]
    target_lang: list[str]


def target_tag(lang: str) -> str:
    """The token that asks a multilingual model for `lang`: '<2de>'."""
    return f'<2{lang}>'


def language_pairs(cfg) -> list[tuple[str, str]]:
    """`cfg.pairs` ('en-de', ...) as [('en', 'de'), ...]; ConfigError if malformed."""
    pairs = cfg.get('pairs', None)
    if isinstance(pairs, str):
        pairs = (pairs,)
    if not pairs:
        raise ConfigError(
            f"data.pairs must list 'src-tgt' pairs, e.g. ('en-de',); got {pairs!r}"
        )
    result = []
    for pair in pairs:
        parts = pair.split('-') if isinstance(pair, str) else []
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"data.pairs entry {pair!r} is not of the form 'src-tgt'")
        result.append((parts[0], parts[1]))
    return result


def target_languages(cfg) -> list[str]:
    """Distinct target languages of `cfg.pairs`, in order of appearance."""
    return list(dict.fromkeys(t for _, t in language_pairs(cfg)))


def tag_symbols(cfg) -> list[str]:
    """Tag tokens the tokenizer needs: one per target language when >= 2."""
    langs = target_languages(cfg)
    return [target_tag(l) for l in langs] if len(langs) >= 2 else []


def _split_file(files_dir: str, split: str, lang: str) -> str:
    """`{files_dir}/{split}.{lang}` or its `.gz`, whichever exists (both: a
    DataError, since they may differ)."""
    if not split:
        raise DataError(
            f'no split named for the {lang} files (an empty split name, e.g. '
            'data.eval_split=""); name one, e.g. val or test_2016_flickr.'
        )
    plain = os.path.join(files_dir, f'{split}.{lang}')
    found = [c for c in (plain, plain + '.gz') if os.path.isfile(c)]
    if len(found) == 2:
        raise DataError(
            f'both {plain} and {plain}.gz exist, and either could be meant; '
            'move one away.'
        )
    if found:
        return found[0]
    raise DataError(f'data file not found: neither {plain} nor {plain}.gz exists')


def _synthetic_pairs(cfg, split: str, tgt: str, max_examples: int):
    seed = int(cfg.get('synthetic_seed', 0))
    if split == 'train':
        size = int(cfg.get('synthetic_train_size', 20000))
    else:  # A different seed per split, so eval sets are (mostly) unseen.
        size = int(cfg.get('synthetic_eval_size', 1000))
        seed = [seed, zlib.crc32(split.encode())]
        seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    if max_examples:
        size = min(size, max_examples)
    return synthetic.generate_pairs(size, seed, target_lang=tgt)


def _tfds_name(cfg, src: str, tgt: str) -> str:
    """The TFDS dataset of pair src-tgt: `data.tfds_names` (one per pair) or
    `data.tfds_name` (one for all pairs)."""
    names = tuple(cfg.get('tfds_names', None) or ())
    if names:
        pairs = language_pairs(cfg)
        if len(names) != len(pairs):
            raise ConfigError(
                f'data.tfds_names lists {len(names)} datasets for {len(pairs)} '
                'data.pairs; give one per pair, in the same order.'
            )
        return names[pairs.index((src, tgt))]
    name = cfg.get('tfds_name', None)
    if not name:
        raise ConfigError(
            "data.tfds_name (or data.tfds_names) must be set when data.source is 'tfds'"
        )
    return name


def _pairs_for(cfg, kind: str, split: str, src: str, tgt: str, max_examples: int):
    if kind == 'synthetic':
        return _synthetic_pairs(cfg, split, tgt, max_examples)
    if kind == 'files':
        files_dir = cfg.get('files_dir', None)
        if not files_dir:
            raise ConfigError("data.files_dir must be set when data.source is 'files'")
        paths = [_split_file(files_dir, split, lang) for lang in (src, tgt)]
        pairs = text_lib.read_parallel(paths)
    else:
        from jaxdistill.data import tfds_translation  # pylint: disable=g-import-not-at-top

        name = _tfds_name(cfg, src, tgt)
        pairs = tfds_translation.load_tfds_translation(
            name,
            split,
            src,
            tgt,
            # '' (the configs' default): TFDS's own default, ~/tensorflow_datasets
            # or $TFDS_DATA_DIR, not the current directory.
            data_dir=cfg.get('tfds_data_dir') or None,
            max_examples=max_examples or None,
            download=cfg.get('tfds_download', True),
        )
    return pairs[:max_examples] if max_examples else pairs


def load_translation(cfg, split: str) -> TranslationData:
    """All examples of `split` for every pair in `cfg.pairs`, concatenated.

    Args:
      cfg: the `config.data` ConfigDict (fields: source, pairs, files_dir,
        tfds_name, tfds_data_dir, synthetic_*, max_examples).
      split: 'train', 'val', 'test_2016_flickr', or a TFDS split name.
    `max_examples` (0 = all) applies to each pair separately.
    """
    kind = cfg.get('source', None)
    if kind not in SOURCES:
        raise ConfigError(
            f'data.source is {kind!r}; valid values: {", ".join(SOURCES)}'
        )
    max_examples = int(cfg.get('max_examples', 0) or 0)
    source, target, langs = [], [], []
    for src, tgt in language_pairs(cfg):
        pairs = _pairs_for(cfg, kind, split, src, tgt, max_examples)
        source += [p[0] for p in pairs]
        target += [p[1] for p in pairs]
        langs += [tgt] * len(pairs)
    return TranslationData(source, target, langs)


def _fit(ids: list[int], max_len: int, too_long: str):
    """(array or None when filtered, was_truncated) for ids that end in EOS."""
    if len(ids) <= max_len:
        return np.asarray(ids, np.int32), False
    if too_long == 'filter':
        return None, False
    return np.asarray(ids[: max_len - 1] + [tokenizer_lib.EOS_ID], np.int32), True


def encode(
    data: TranslationData, tokenizer, *, max_len: int, too_long: str, tagged: bool
) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Token ids of every usable pair, EOS last on both sides.

    Args:
      data: sentences to encode.
      tokenizer: a `Tokenizer`; with `tagged`, it must know every
        `target_tag(lang)` as a piece (train it with `tag_symbols(cfg)`).
      max_len: most tokens per side, counting EOS and the tag.
      too_long: 'filter' drops pairs with a side over max_len; 'truncate'
        cuts such sides to max_len, keeping EOS last.
      tagged: put the target-language tag id first on the source.
    Returns:
      (sources, targets, stats): int32 arrays [len_i] each, and
      {'examples', 'filtered_too_long', 'truncated', 'skipped_empty'}.
    """
    if too_long not in TOO_LONG:
        raise ConfigError(
            f'data.too_long is {too_long!r}; valid values: {", ".join(TOO_LONG)}'
        )
    if max_len < 2 + int(tagged):
        raise ConfigError(
            f'data.max_len is {max_len}; it must leave room for EOS and a token'
        )
    tag_ids = {}
    if tagged:
        for lang in dict.fromkeys(data.target_lang):
            tag_ids[lang] = tokenizer.piece_to_id(target_tag(lang))
            if tag_ids[lang] == tokenizer_lib.UNK_ID:
                raise DataError(
                    f'the tokenizer has no piece {target_tag(lang)!r}; train it '
                    'with user_defined_symbols=tag_symbols(config.data)'
                )
    stats = {'examples': 0, 'filtered_too_long': 0, 'truncated': 0, 'skipped_empty': 0}
    sources, targets = [], []
    for src, tgt, lang in zip(data.source, data.target, data.target_lang):
        if not src.strip() or not tgt.strip():
            stats['skipped_empty'] += 1
            continue
        src_ids = ([tag_ids[lang]] if tagged else []) + tokenizer.encode(src)
        src_ids, src_cut = _fit(src_ids + [tokenizer_lib.EOS_ID], max_len, too_long)
        tgt_ids, tgt_cut = _fit(
            tokenizer.encode(tgt) + [tokenizer_lib.EOS_ID], max_len, too_long
        )
        if src_ids is None or tgt_ids is None:
            stats['filtered_too_long'] += 1
            continue
        stats['truncated'] += int(src_cut or tgt_cut)
        sources.append(src_ids)
        targets.append(tgt_ids)
    stats['examples'] = len(sources)
    return sources, targets, stats
