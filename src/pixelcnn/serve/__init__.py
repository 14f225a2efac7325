"""``pixelcnn serve``: a local web app to draw, erase, complete, sample, score and compress images.

    pixelcnn serve                          # the shipped checkpoints
    pixelcnn serve runs/mnist pretrained:mnist --port 8000

:mod:`pixelcnn.serve.work` holds what the page asks of a model, in plain library calls;
:mod:`pixelcnn.serve.parsing` reads and checks requests; :mod:`pixelcnn.serve.app` is the HTTP API
(Starlette) around them; :mod:`pixelcnn.serve.commands` the ``serve`` command; ``static/`` the page itself (plain
HTML, JS and CSS, no build step). Needs the ``serve`` extra: ``pip install pixelcnn[serve]``.
"""
