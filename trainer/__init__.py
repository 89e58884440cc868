"""Training: Keras models under tf.distribute, selection and the export.

`doctags_core` is imported first: it sets TensorFlow's oneDNN switch, which
must happen before TensorFlow is imported (see its docstring).
"""

import doctags_core  # noqa: F401
