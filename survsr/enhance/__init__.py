"""The enhancement layer, below both ``pipelines/`` and ``serve/``: the one generator runner (``runner``),
the pixel operations and marking of model output (``frames``), video writing (``videoio``) and the per-video
worker (``worker``). The archive job, the service, live streams and evaluation all enhance through it, so
every reported number and every delivered frame comes from the same pixels."""
