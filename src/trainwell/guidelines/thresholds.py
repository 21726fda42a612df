"""The guidelines' named thresholds, in one place, each with the reason for its value.

The advisor's rules and the recipes read these names (as keyword defaults, so a caller can pass its own);
none of the numbers appears anywhere else. Where the chapter gives no number, the docstring says so and
says how the value was chosen.
"""

from __future__ import annotations

DEEP_NET_HIDDEN_LAYERS = 10
"""A net with at least this many hidden dense layers counts as *deep* ("Batch Norm if deep", Table 11-3).

The chapter gives no number. Its shallow examples (2–3 hidden layers on Fashion-MNIST) train well without
Batch Normalization; its exercise's 20 hidden layers are where BN changes the outcome. 10 sits between the
two and is where, with the chapter's sizes, the product of per-layer gains starts to matter: a per-layer
variance factor of 0.8 or 1.25 (a mis-matched initialization, a drifting activation) compounds to about 0.1
or 9 over 10 layers, an order of magnitude.
"""

HIGH_OPTIMIZER_MOMENTUM = 0.999
"""Optimizer momentum (SGD's or RMSprop's ``momentum``, Adam's ``beta_1``) at or above this is too high.

With momentum β the terminal velocity is ``1 / (1 − β)`` times the gradient step (ch. 11, "Momentum
Optimization": β = 0.9 gives 10×). At 0.999 that is 1,000×: the updates overshoot and oscillate for many
steps. The chapter's typical value is 0.9; 1cycle cycles it between 0.85 and 0.95.
"""

HIGH_BN_MOMENTUM = 0.999
"""Batch Normalization momentum at or above this averages the moving statistics over ``1 / (1 − m)`` ≥
1,000 steps.

The chapter (Batch Normalization) allows 0.9, 0.99 or 0.999 — more 9s for larger data sets and smaller
mini-batches — so such a momentum is only flagged when an epoch has fewer steps than that horizon: then the
statistics used at inference (every validation pass, the final model) are still dominated by their initial
values and by the first, untrained steps.
"""
