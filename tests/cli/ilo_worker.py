"""Subprocess for the ``interp ilo`` kill/resume test: the job on a tiny model, slowed down.

usage: python ilo_worker.py <interp ilo arguments...>

``interp.models.loading.load_model`` is replaced by a tiny random Llama (the one
:func:`model` builds, so the test can rebuild it) whose every forward pass sleeps 0.15 s,
so a SIGKILL from the test lands between shard commits.
"""

import sys
import time

from interp.models import byte_tokenizer, loading, tiny_llama


def model():
    return tiny_llama(n_layers=2, d_model=32, seed=1), byte_tokenizer()


class Sleep:
    def __call__(self, module, inputs, output):
        time.sleep(0.15)


if __name__ == "__main__":
    net, tok = model()
    net.model.layers[0].register_forward_hook(Sleep())
    loading.load_model = lambda *args, **kwargs: (net, tok)
    from interp.cli import main

    sys.exit(main(["ilo", *sys.argv[1:]]))
