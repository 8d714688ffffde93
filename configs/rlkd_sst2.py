"""Reinforced multi-teacher distillation on SST-2: teachers, student, KD arms.

Train the teachers (each a normal supervised run), then the student from them:
  python -m jaxdistill.train --config configs/rlkd_sst2.py:arm=teacher_cnn --workdir /tmp/t_cnn
  python -m jaxdistill.train --config configs/rlkd_sst2.py:arm=teacher_bilstm --workdir /tmp/t_lstm
  python -m jaxdistill.train --config configs/rlkd_sst2.py:arm=teacher_transformer --workdir /tmp/t_tf
  python -m jaxdistill.train \
    --config configs/rlkd_sst2.py:arm=rl,teachers=/tmp/t_cnn+/tmp/t_lstm+/tmp/t_tf \
    --workdir /tmp/rlkd
Arguments (comma-separated):
  arm=NAME      teacher_transformer | teacher_cnn | teacher_bilstm (supervised
                teachers); student (the student alone, supervised);
                kd (equal-weight multi-teacher KD; one teacher = single-teacher
                KD); rl (policy-weighted, the default).
  teachers=A+B  teacher workdirs, '+'-separated (kd and rl arms).
  runlocal      shrink everything so a run takes seconds (tests).
"""

import ml_collections

import image_classification_base as base

from jaxdistill.errors import ConfigError

TEACHERS = {
    # Transformer encoder classifier (the library's text_classifier, one exit).
    'teacher_transformer': {
        'name': 'text_classifier',
        'num_layers': 2,
        'd_model': 64,
        'num_heads': 4,
        'd_ff': 128,
        'exits': (),
        'dropout_rate': 0.1,
    },
    # Kim-style CNN over words: widths 3, 4, 5, max over time.
    'teacher_cnn': {
        'name': 'cnn_text',
        'embed_dim': 64,
        'num_filters': 64,
        'widths': (3, 4, 5),
        'hidden_dim': 64,
        'dropout_rate': 0.3,
    },
    # Bidirectional LSTM, max-pooled over time.
    'teacher_bilstm': {
        'name': 'bilstm_text',
        'embed_dim': 64,
        'hidden_size': 64,
        'hidden_dim': 64,
        'dropout_rate': 0.2,
    },
}
# The student: a bag of embeddings (order-blind, so it cannot read negation).
STUDENT = {
    'name': 'bag_of_embeddings',
    'embed_dim': 64,
    'hidden_dim': 64,
    'dropout_rate': 0.1,
}
ARMS = ('student', 'kd', 'rl', *TEACHERS)


def get_config(arg=None):
    args = base.parse_arg(arg)
    unknown = set(args) - {'arm', 'teachers', 'runlocal'}
    if unknown:
        raise ConfigError(
            f'Unknown config argument(s) {sorted(unknown)}; known: arm, teachers, '
            'runlocal.'
        )
    arm = args.get('arm', 'rl')
    if arm not in ARMS:
        raise ConfigError(f'arm={arm!r}; valid: {" | ".join(ARMS)}.')
    if args.get('teachers') is True:
        raise ConfigError("teachers=DIR1+DIR2+... needs the teachers' workdirs.")
    if 'teachers' in args and arm not in ('kd', 'rl'):
        raise ConfigError(
            f'teachers= is for the kd and rl arms; arm={arm} trains without teachers.'
        )
    teachers = tuple(t for t in str(args.get('teachers', '')).split('+') if t)
    config = base.get_config('method=supervised')
    config.task = 'text_classification'
    # Student or teacher architecture (see TEACHERS and STUDENT above).
    config.model = ml_collections.ConfigDict(dict(TEACHERS.get(arm, STUDENT)))
    config.data = ml_collections.ConfigDict(
        {
            'data_dir': '../shared/data/sst2',
            # 'dev' (held-out training phrases: choose checkpoints) | 'test'
            # (GLUE dev sentences: report).
            'eval_split': 'dev',
            'batch_size': 64,
            # 'words' (lowercased words, the most frequent vocab_size - 2)
            # or 'sentencepiece' (a unigram model of vocab_size pieces,
            # trained on the training phrases, kept as WORKDIR/spm.model).
            'tokenizer': 'words',
            'vocab_size': 16000,
            # Words seen fewer times in training are UNK ('words' only): with
            # 1, UNK never occurs in training and its row is never trained,
            # yet 5.7% of glue_dev's words read it.
            'min_count': 2,
            'max_len': 40,
            'max_train_examples': 0,
            # Workdirs of trained teacher runs whose logits ride with each batch.
            'teachers': teachers,
            # Where teacher logits are cached ('' = each teacher's logit_cache/).
            'teacher_cache_dir': '',
        }
    )
    # Sized for 2 busy CPU cores: teachers see 0.6 epoch of the 60k phrases,
    # students 1.6 epochs (the benchmark's --scale gpu trains longer).
    teacher = arm.startswith('teacher')
    config.num_train_steps = 600 if teacher else 1500
    config.log_every_steps = 100
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 1e-2
    config.optimizer.warmup_steps = 100
    config.checkpoint.every_steps = 300 if teacher else 250
    # Keep every checkpoint: the benchmark picks the best on dev.
    config.checkpoint.keep = 0
    config.eval.every_steps = config.checkpoint.every_steps
    config.eval.batch_size = 512
    config.eval.timing_repeats = 0
    if arm in ('kd', 'rl'):
        if not teachers:
            raise ConfigError(f'arm={arm} needs teachers=DIR1+DIR2+...')
        config.method = ml_collections.ConfigDict(
            {
                'name': 'rl_multi_teacher',
                # Teachers K; must match data.teachers.
                'num_teachers': len(teachers),
                'num_classes': 2,
                # Width of the student's pooled feature (model.hidden_dim).
                # Derived: follows an override of model.hidden_dim.
                'feature_dim': config.model.get_ref('hidden_dim') + 0,
                # Weight α of distillation (labels get 1 − α).
                'alpha': 0.5,
                # Distillation temperature T.
                'temperature': 2.0,
                # 'equal' (fixed 1/K) | 'select' (Bernoulli, uniform over the
                # selected) | 'soft' (Bernoulli, selected weighted by probability).
                'weighting': 'equal' if arm == 'kd' else 'select',
                # When no teacher is selected: 'all' | 'argmax' | 'none'.
                'fallback': 'all',
                # 'neg_ce' | 'neg_ce_kd' | 'dev_acc' (see the method's docs).
                'reward': 'neg_ce',
                # Student warm-up with equal weights, then policy pre-training
                # (policy updated every step), then a policy update every
                # policy_every steps.
                'warmup_steps': 300,
                'pretrain_steps': 200,
                'policy_every': 4,
                # The policy's own Adam learning rate.
                'policy_learning_rate': 3e-3,
                # Decay of the moving-average reward baseline.
                'baseline_decay': 0.9,
                # Initial probability of selecting each teacher.
                'init_select_prob': 0.5,
            }
        )
    if args.get('runlocal'):
        shrink(config)
    return config


def shrink(config):
    """A run of seconds: tiny models, 512 examples, few steps."""
    config.num_train_steps = 8
    config.log_every_steps = 4
    for key in ('d_model', 'd_ff', 'embed_dim', 'hidden_dim', 'hidden_size'):
        if key in config.model:
            config.model[key] = 16
    if 'num_filters' in config.model:
        config.model.num_filters = 8
    if 'num_heads' in config.model:
        config.model.num_heads = 2
    if 'feature_dim' in config.method:  # (feature_dim follows hidden_dim.)
        config.method.update(warmup_steps=2, pretrain_steps=2, policy_every=2)
    config.data.update(
        vocab_size=500, max_len=24, batch_size=32, max_train_examples=512
    )
    config.optimizer.warmup_steps = 2
    config.checkpoint.every_steps = 4
    config.eval.update(every_steps=0, max_examples=128, batch_size=64)
