"""Where each guideline comes from: the citations that recipe comments and advisor findings carry.

All are to Géron's "Training Deep Neural Networks" chapter (chapter 11 of *Hands-On Machine Learning*,
2nd edition), by table or by section title, so a reader can look each one up ("Practical Guidelines" is its
closing section, "Summary and Practical Guidelines"). One name per place cited, so
the same guideline is always cited the same way.
"""

from __future__ import annotations

CHAPTER = "Géron, Training Deep Neural Networks"

DEFAULT_TABLE = "Table 11-3"
SELF_NORMALIZING_TABLE = "Table 11-4"
INIT_TABLE = "Table 11-1"
# The chapter's closing section, "Summary and Practical Guidelines", and its special cases.
PRACTICAL_GUIDELINES = "Practical Guidelines"
SPARSE_CASE = "Practical Guidelines, sparse model"
LOW_LATENCY_CASE = "Practical Guidelines, low-latency model"
RISK_SENSITIVE_CASE = "Practical Guidelines, risk-sensitive application"

# What each table is, for citations outside the short comments of a recipe.
TABLE_TITLES = {
    DEFAULT_TABLE: "default DNN configuration",
    SELF_NORMALIZING_TABLE: "DNN configuration for a self-normalizing net",
    INIT_TABLE: "initialization parameters for each type of activation function",
}

INITIALIZATION = "Glorot and He Initialization"
ACTIVATIONS = "Nonsaturating Activation Functions"
SELU_CONDITIONS = "Nonsaturating Activation Functions (SELU)"
BATCH_NORM = "Batch Normalization"
MOMENTUM = "Momentum Optimization"
NESTEROV = "Nesterov Accelerated Gradient"
ADAGRAD = "AdaGrad"
ADAPTIVE = "Adam and Nadam Optimization"
SPARSE_MODELS = "Training Sparse Models"
SCHEDULES = "Learning Rate Scheduling"
L1_L2 = "ℓ1 and ℓ2 Regularization"
DROPOUT = "Dropout"
ALPHA_DROPOUT = "Dropout (alpha dropout)"
MC_DROPOUT = "Monte Carlo (MC) Dropout"
MAX_NORM = "Max-Norm Regularization"


def cite(*places: str) -> str:
    """The full citation: ``"Géron, Training Deep Neural Networks: Table 11-3 (default DNN configuration);
    Batch Normalization"``. Recipe comments use the short names alone."""
    named = [f"{p} ({TABLE_TITLES[p]})" if p in TABLE_TITLES else p for p in places]
    return f"{CHAPTER}: {'; '.join(named)}"
