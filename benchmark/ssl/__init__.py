"""Self-supervised (contrastive) pre-training methods, one module per method id.

Every method is an :class:`SSLMethod`: a backbone (the encoder that is released) plus the method's
heads. ``loss(view1, view2)`` returns the method's loss on a batch of two augmented views, and
``after_step()`` performs the method's bookkeeping after an optimiser step (momentum update, queue).

``dual_branch=True`` lets gradients w.r.t. the *inputs* flow through the momentum/target branch as well
(the momentum parameters never receive gradients); Contrastive Poisoning needs it for MoCo v2 and BYOL.
"""

from __future__ import annotations

from benchmark.ssl import byol, mocov2, simclr  # the built-in methods, one module each: importing registers them
from benchmark.ssl.base import (
    SSL_METHODS,
    SSLMethod,
    create_ssl_method,
    ema_update,
    mlp,
    momentum_copy,
    register_ssl,
    ssl_method_names,
)

__all__ = ["SSL_METHODS", "SSLMethod", "byol", "create_ssl_method", "ema_update", "mlp", "mocov2", "momentum_copy",
           "register_ssl", "simclr", "ssl_method_names"]
