"""Classic distillation on the built-in task: a student learns from a finished run.

Train the teacher first, then give the student a workdir holding the teacher's
tokenizer (distillation needs one vocabulary):

  python -m jaxdistill.train --config configs/translate_synthetic.py --workdir /tmp/teacher
  mkdir -p /tmp/student && cp /tmp/teacher/spm.model /tmp/student/
  python -m jaxdistill.train --config configs/distill_synthetic.py \
      --workdir /tmp/student --config.method.teacher_workdir=/tmp/teacher
"""

import ml_collections
import translate_synthetic


def get_config(arg=None):
    config = translate_synthetic.get_config(arg)
    label_smoothing = config.method.label_smoothing
    config.method = ml_collections.ConfigDict()
    # Registered method: jaxdistill/methods/distill.py.
    config.method.name = 'distill'
    # Workdir of the finished teacher run (its latest checkpoint is used).
    config.method.teacher_workdir = ''
    # Weight of the distillation term; (1 - alpha) weighs the label loss.
    config.method.alpha = 0.5
    # Softmax temperature of the distillation term.
    config.method.temperature = 1.0
    # Label smoothing of the label loss.
    config.method.label_smoothing = label_smoothing
    # The student: half the teacher's (the same config's) FFN units and heads,
    # each head as wide as the teacher's.
    m = config.model
    m.head_size = m.get('head_size') or m.d_model // m.num_heads
    m.num_heads = max(1, m.num_heads // 2)
    m.d_ff = max(1, m.d_ff // 2)
    return config
